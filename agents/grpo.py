"""Group-relative policy optimisation (GRPO, Dr.GRPO, RLOO) of a :class:`TransformerLM`.

PPO's clipped-ratio objective with a *group baseline* instead of a critic, at the sequence level,
in the CleanRL spirit: one file, one config dataclass, every logged number named (the file runs
past 400 lines for that reason: the algorithm reads top to bottom in one place).
:func:`train_grpo` repeats five phases, each a function of this module:

1. :func:`sample`: draw ``B`` problems and sample ``G`` completions of each (a group shares its
   problem: its rows are reset with the same seed) on the native vector env, with the KV-cached LM
   under the grammar mask at ``temperature`` (each prompt prefilled once per group); the env gives
   the reward (outcome, plus ``process_reward`` per correct intermediate when set), the sampler
   the log-probability of every token it drew;
2. :func:`score`: advantages per group: ``grpo`` ``(r - mean) / std``, ``drgrpo`` ``r - mean`` (no
   std, which over-weights nearly solved groups), ``rloo`` ``r - mean of the others``; groups whose
   rewards all agree carry no signal and can be dropped (``drop_zero_variance``);
3. :func:`update`: ``epochs`` passes of minibatches over the kept completions: ratio of the new
   to the sampling policy per token, clipped at ``1 ± clip_eps``, the sequence's advantage on
   every token; token-mean or sequence-mean; optional KL to the reference (the starting,
   behavior-cloned model); AdamW with linear warm-up then a constant rate; gradient clipping;
4. :func:`log_iteration`: one row of named numbers (history, TensorBoard, progress bar);
5. :func:`save_checkpoint`: every ``checkpoint_every`` iterations, at the end, at ``time_limit_s``
   and on Ctrl-C (the last finished iteration: an interrupt loses at most the one in progress).

What the update does not redo.  The ratio's denominator is the policy that sampled, and its
log-probabilities are recorded while sampling: the weights are those of the first update step, so
this equals recomputing them (up to float rounding); later minibatches and epochs divide by the
sampling policy too, which is what PPO's clipped trust region is measured against.  The
reference pass runs only when ``kl_coef > 0``; otherwise ``kl_ref`` is measured on a strided
subsample of ``kl_sample`` completions (the k3 estimate of KL(sampling policy || reference)).
Each minibatch runs in length buckets (rows sorted by length, each bucket cut to its own longest
row), and the head and log-softmax see only the written tokens: no work on padding.  Samples of
one problem that agree token for token have the same loss terms: one of them runs, weighted by
how many it stands for.

Why not SB3's PPO: its per-token minibatches of a few hundred tokens hold about a dozen episodes,
so each update is mostly noise for a policy that already solves most problems; here one update
sees hundreds of whole episodes, and the baseline is free.

TensorBoard (``run_dir``): ``grpo/reward``, ``grpo/pass_rate``, ``grpo/zero_variance_share``,
``grpo/kl_ref``, ``grpo/entropy``, ``grpo/clip_fraction``, ``grpo/tokens_per_s``, ``grpo/lr``,
``grpo/loss``, ``grpo/sample_share``, and ``eval_<set>/…`` (see
:mod:`composition_gym.agents.callbacks`), against env steps (sampled tokens) like the SB3 runs.
A run started again on the same ``run_dir`` resumes from ``run_dir/grpo_checkpoint.pt`` and ends
exactly where an uninterrupted run would.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from composition_gym.agents import seeds
from composition_gym.agents.bc import IGNORE, Sequences, expert_sequences, trimmed_batch
from composition_gym.agents.callbacks import report_scalars
from composition_gym.agents.evaluation import evaluate
from composition_gym.agents.sampling import LMChooser, Played, make_vec, play
from composition_gym.agents.settings import ADVANTAGES, GRPOConfig, check_device, progress_bar, torch_threads
from composition_gym.agents.transformer import TransformerLM
from composition_gym.atomic import atomic_write
from composition_gym.registration import resolve_env_id, resolve_env_ids

CHECKPOINT = "grpo_checkpoint.pt"
BUCKET_POSITIONS = 4_096  # rows x length per forward of the update (8,192: as fast, +60 MB peak RSS)
#: Config fields that do not change what a run computes: a run may resume with other values.
RESUMABLE_CHANGES = ("compile", "checkpoint_every")


def group_advantages(rewards: torch.Tensor, kind: str) -> torch.Tensor:
    """Advantages ``[B, G]`` of rewards ``[B, G]`` (one row per group) under ``kind``."""
    mean = rewards.mean(dim=1, keepdim=True)
    if kind == "grpo":
        return (rewards - mean) / (rewards.std(dim=1, keepdim=True) + 1e-6)
    if kind == "drgrpo":
        return rewards - mean
    if kind == "rloo":
        g = rewards.shape[1]
        return (rewards - mean) * g / (g - 1)  # r_i - mean of the other g - 1
    raise ValueError(f"unknown advantage {kind!r}; choose from {ADVANTAGES}")


# ---------------------------------------------------------------------------- 1. sample
def sample(venv: Any, lm: TransformerLM, cfg: GRPOConfig, gen: torch.Generator, base_seed: int) -> Played:
    """``G`` completions of each of ``B`` problems (group ``j``'s rows share problem seed ``base_seed + j``),
    with the grammar masks and the sampling log-probability of every written token."""
    b, g = cfg.problems_per_iter, cfg.group_size
    lm.eval()
    return play(venv, [base_seed + j for j in range(b) for _ in range(g)], LMChooser(lm, cfg.temperature, gen),
                record_masks=True, record_log_probs=True)


# ---------------------------------------------------------------------------- 2. score
@dataclass
class Completions:
    """Sampled completions as the update reads them (tensors on the model's device).

    ``steps`` and ``lengths`` (prompt + trace per row) are numpy arrays: buckets are planned on the
    host, with no device synchronisation per minibatch.
    """

    ids: torch.Tensor  # [N, W] prompt + trace, right-padded
    prompt_len: torch.Tensor  # [N]
    actions: torch.Tensor  # [N, S]
    masks: torch.Tensor  # [N, S, V] grammar mask at each written token
    steps: np.ndarray  # [N] trace tokens per row
    lengths: np.ndarray  # [N] prompt + trace tokens per row


@dataclass
class Scored(Completions):
    """:class:`Completions` with what :func:`score` adds: the sampling policy's log-probabilities,
    advantages, the rows to train on (every row, or those of informative groups), the rewards."""

    old_logp: torch.Tensor  # [N, S]
    advantages: torch.Tensor  # [N]
    rows: torch.Tensor  # [K]
    rewards: torch.Tensor  # [B, G]
    informative: torch.Tensor  # [B] groups whose rewards differ
    history: np.ndarray  # [N] equal for rows of one group with the same tokens (same loss terms)


def score(played: Played, cfg: GRPOConfig, device: str | torch.device = "cpu") -> Scored:
    """Rewards per group, advantages, and the rows the update keeps."""
    b, g = cfg.problems_per_iter, cfg.group_size
    rewards = torch.as_tensor(played.reward, dtype=torch.float32).view(b, g)
    informative = rewards.max(dim=1).values > rewards.min(dim=1).values
    keep = informative.repeat_interleave(g) if cfg.drop_zero_variance else torch.ones(b * g, dtype=torch.bool)
    lengths = np.asarray(played.prompt_len + played.steps)
    obs = played.obs[:, : int(lengths.max())]
    # Samples of one problem often agree token for token; such rows have the same advantage,
    # log-probabilities and gradient, so the update runs one of them, weighted.
    group = np.repeat(np.arange(b), g)[:, None]
    history = np.unique(np.concatenate([group, obs], axis=1), axis=0, return_inverse=True)[1].reshape(-1)
    return Scored(ids=torch.as_tensor(obs, device=device),
                  prompt_len=torch.as_tensor(played.prompt_len, device=device),
                  actions=torch.as_tensor(played.actions, device=device),
                  masks=torch.as_tensor(played.masks, device=device), steps=np.asarray(played.steps),
                  lengths=lengths, old_logp=torch.as_tensor(played.log_probs, device=device),
                  advantages=group_advantages(rewards, cfg.advantage).view(-1).to(device),
                  rows=torch.nonzero(keep).squeeze(1).to(device), rewards=rewards, informative=informative,
                  history=history)


# ---------------------------------------------------------------------------- 3. update
def length_buckets(rows: np.ndarray, lengths: np.ndarray, positions: int = BUCKET_POSITIONS) -> list[np.ndarray]:
    """``rows`` sorted by length and cut into buckets of at most ``positions`` rows x longest row
    (at least one row each): each bucket's forward pads only to its own longest row."""
    rows = rows[np.argsort(lengths[rows], kind="stable")]
    out, start = [], 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or (end + 1 - start) * lengths[rows[end]] > positions:
            out.append(rows[start:end])
            start = end
    return out


def _written(data: Completions, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row (of ``data``), step and column of every written token of ``rows``, row by row: the packed layout."""
    steps = data.steps[rows]
    local = np.repeat(np.arange(len(rows)), steps)
    step = torch.as_tensor(np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps),
                           device=data.ids.device)
    row = torch.as_tensor(rows[local], device=data.ids.device)
    return row, step, data.prompt_len[row] + step - 1


def bucket_log_probs(lm: TransformerLM, data: Completions, rows: np.ndarray, temperature: float,
                     body: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(action), entropy)`` ``[M]`` of the ``M`` written tokens of ``rows`` (packed, row by
    row) under ``lm``'s tempered, masked policy: one forward of ``body`` (default ``lm.body``) over
    the rows cut to their longest; the head and the log-softmax see the written tokens only.  The
    entropy carries no gradient."""
    row, step, pos = _written(data, rows)
    index = torch.as_tensor(rows, device=data.ids.device)
    hidden = (lm.body if body is None else body)(data.ids[index, : int(data.lengths[rows].max())])
    local = torch.as_tensor(np.repeat(np.arange(len(rows)), data.steps[rows]), device=data.ids.device)
    logits = lm.head(hidden[local, pos]) / temperature  # [M, V]
    masks = data.masks[row, step]
    logp_all = torch.log_softmax(logits.masked_fill(~masks, float("-inf")), dim=-1)
    logp = logp_all.gather(-1, data.actions[row, step].unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():  # a logged number: no graph, no backward through it
        entropy = -(logp_all.exp() * logp_all.masked_fill(~masks, 0.0)).sum(-1)
    return logp, entropy


def token_log_probs(lm: TransformerLM, ids: torch.Tensor, prompt_len: torch.Tensor, actions: torch.Tensor,
                    masks: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(action), entropy)`` ``[N, S]`` of each written token under the tempered, masked policy.

    A written token is one with a non-empty mask (padding after a row's end has none; both values
    are 0 there).  The logits before trace token ``s`` sit at position ``prompt_len + s - 1``.
    """
    steps = masks.any(dim=-1).sum(dim=1).cpu().numpy()
    data = Completions(ids, prompt_len, actions, masks, steps, prompt_len.cpu().numpy() + steps)
    rows = np.flatnonzero(steps)
    logp, entropy = torch.zeros(actions.shape, device=ids.device), torch.zeros(actions.shape, device=ids.device)
    if rows.size:
        row, step, _ = _written(data, rows)
        logp[row, step], entropy[row, step] = bucket_log_probs(lm, data, rows, temperature)
    return logp, entropy


def update(lm: TransformerLM, ref: TransformerLM, opt: torch.optim.Optimizer, sched: Any, scored: Scored,
           cfg: GRPOConfig, gen: torch.Generator, replay: Sequences | None = None) -> dict[str, float]:
    """``cfg.epochs`` passes of clipped-ratio minibatch steps; the minibatch means of ``loss``,
    ``kl_ref`` (token mean; only when ``kl_coef > 0``), ``entropy`` and ``clip_fraction`` (and
    ``replay_nll``, the replayed traces' token loss, with a ``replay`` pool)."""
    if not scored.rows.numel():
        return {}
    body = _compiled(lm.body) if cfg.compile else None
    lm.train()
    per_minibatch, replay_nll = [], []
    for _ in range(cfg.epochs):
        order = scored.rows[torch.randperm(scored.rows.numel(), generator=gen, device=gen.device)]
        for mb in order.split(cfg.minibatch_size):
            mb_rows = mb.cpu().numpy()
            n_tokens = int(scored.steps[mb_rows].sum())
            rows, copies = distinct_rows(scored, mb_rows)
            opt.zero_grad(set_to_none=True)
            sums = []
            for bucket in length_buckets(rows, scored.lengths):
                sums.append(_bucket_loss(lm, ref, scored, bucket, copies[bucket], cfg, n_tokens, len(mb_rows), body))
            if replay is not None:
                replay_nll.append(_replay_loss(lm, replay, cfg, gen))
            torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            per_minibatch.append(torch.stack(sums).sum(0) / torch.tensor([1.0, n_tokens, n_tokens, n_tokens],
                                                                        device=sums[0].device))
    lm.eval()
    means = torch.stack(per_minibatch).mean(0).tolist()  # the iteration's one read of the numbers
    out = dict(zip(("loss", "kl_ref", "entropy", "clip_fraction"), means))
    if not cfg.kl_coef:
        del out["kl_ref"]  # measured on the sampled completions instead (kl_estimate)
    if replay_nll:
        out["replay_nll"] = float(torch.stack(replay_nll).mean())
    return out


def _replay_loss(lm: TransformerLM, replay: Sequences, cfg: GRPOConfig, gen: torch.Generator) -> torch.Tensor:
    """Backward of ``replay_coef`` x the teacher-forced token loss of ``replay_batch`` replayed
    expert sequences (drawn with the run's generator); returns the detached loss."""
    idx = torch.randint(len(replay), (cfg.replay_batch,), generator=gen, device=gen.device).cpu()
    x, y = trimmed_batch(replay, idx, next(lm.parameters()).device)
    logits = lm(x)
    keep = y != IGNORE
    nll = F.cross_entropy(logits[keep], y[keep])
    (cfg.replay_coef * nll).backward()
    return nll.detach()


def distinct_rows(scored: Scored, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per distinct history among ``rows`` and, indexed by row, how many of ``rows`` it stands for."""
    _, first, counts = np.unique(scored.history[rows], return_index=True, return_counts=True)
    copies = np.zeros(len(scored.steps), dtype=np.int64)
    copies[rows[first]] = counts
    return rows[first], copies


def _bucket_loss(lm: TransformerLM, ref: TransformerLM, scored: Scored, bucket: np.ndarray, copies: np.ndarray,
                 cfg: GRPOConfig, n_tokens: int, n_rows: int, body: Any = None) -> torch.Tensor:
    """Backward of one bucket's share of its minibatch's loss (each row standing for ``copies`` of
    itself); returns the detached sums of ``[loss, kl, entropy, clipped tokens]``."""
    logp, entropy = bucket_log_probs(lm, scored, bucket, cfg.temperature, body)
    index, step, _ = _written(scored, bucket)
    count = torch.as_tensor(np.repeat(copies, scored.steps[bucket]), dtype=logp.dtype, device=logp.device)
    ratio = (logp - scored.old_logp[index, step]).exp()
    a = scored.advantages[index]
    per_token = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
    kl = torch.zeros_like(logp)
    if cfg.kl_coef:
        with torch.no_grad():
            ref_logp, _ = bucket_log_probs(ref, scored, bucket, cfg.temperature)
        log_r = ref_logp - logp
        kl = log_r.exp() - log_r - 1  # k3: unbiased, non-negative estimate of KL(pi || ref)
        per_token = per_token + cfg.kl_coef * kl
    if cfg.loss_agg == "token":
        weight = count / max(n_tokens, 1)
    else:  # the mean over the minibatch's sequences of each sequence's token mean
        weight = count / (torch.as_tensor(scored.steps, device=logp.device)[index].clamp(min=1) * n_rows)
    loss = (per_token * weight).sum()
    loss.backward()
    clipped = ((ratio - 1).abs() > cfg.clip_eps).float()
    return torch.stack([loss, (kl * count).sum(), (entropy * count).sum(), (clipped * count).sum()]).detach()


def kl_estimate(ref: TransformerLM, scored: Scored, cfg: GRPOConfig) -> float:
    """k3 estimate of KL(sampling policy || reference) per token on ``cfg.kl_sample`` completions
    (every ``N / kl_sample``-th row: no random draws, so the run's generator is untouched)."""
    n = len(scored.steps)
    rows = np.arange(0, n, max(1, n // max(cfg.kl_sample, 1)))[: cfg.kl_sample]
    rows = rows[scored.steps[rows] > 0]
    if not rows.size:
        return float("nan")
    with torch.no_grad():
        index, step, _ = _written(scored, rows)
        log_r = bucket_log_probs(ref, scored, rows, cfg.temperature)[0] - scored.old_logp[index, step]
    return float((log_r.exp() - log_r - 1).mean())


_COMPILED: list[Any] = [None, None]  # (module, its compiled forward)


def _compiled(body: torch.nn.Module) -> Any:
    """``torch.compile(body)`` (``GRPOConfig.compile``), kept for the last module compiled; shapes
    vary per bucket, so dynamic."""
    if _COMPILED[0] is not body:
        _COMPILED[:] = [body, torch.compile(body, dynamic=True)]
    return _COMPILED[1]


# ---------------------------------------------------------------------------- 4. log
def log_iteration(state: dict[str, Any], scored: Scored, played: Played, stats: dict[str, float], kl: float,
                  seconds: float, t_sample: float, lr: float, writer: Any = None) -> dict[str, Any]:
    """Append the iteration's row of named numbers to ``state["history"]`` (and TensorBoard)."""
    n_tokens = int(played.steps.sum())
    state["iteration"] += 1
    state["env_steps"] += n_tokens
    row = {"iteration": state["iteration"], "env_steps": state["env_steps"], "reward": float(scored.rewards.mean()),
           "pass_rate": float(played.success.mean()),
           "zero_variance_share": float(1 - scored.informative.float().mean()),
           "tokens_per_s": n_tokens / seconds, "sample_share": t_sample / seconds, "lr": lr,
           "loss": stats.get("loss", 0.0), "kl_ref": stats.get("kl_ref", kl),
           "entropy": stats.get("entropy", 0.0), "clip_fraction": stats.get("clip_fraction", 0.0),
           **{k: v for k, v in stats.items() if k == "replay_nll"}}
    state["history"].append(row)
    if writer is not None:
        for k, v in row.items():
            if k not in ("iteration", "env_steps"):
                writer.add_scalar(f"grpo/{k}", v, state["env_steps"])
    return row


# ---------------------------------------------------------------------------- 5. checkpoint
def save_checkpoint(path: str, snapshot: dict[str, Any]) -> None:
    """Write ``snapshot`` to ``path`` atomically (a kill mid-write leaves the previous file intact)."""
    atomic_write(path, lambda tmp: torch.save(snapshot, tmp))


def _same_run(saved: dict[str, Any], cfg: GRPOConfig) -> bool:
    """Whether a checkpoint's config is ``cfg``'s, up to :data:`RESUMABLE_CHANGES` (fields a
    checkpoint predates count as their defaults)."""
    defaults, now = GRPOConfig().to_dict(), cfg.to_dict()
    return all(saved.get(k, defaults[k]) == v for k, v in now.items() if k not in RESUMABLE_CHANGES)


# ---------------------------------------------------------------------------- the loop
def train_grpo(env_id: str, lm: TransformerLM, config: GRPOConfig | None = None, *, seed: int = 0,
               run_dir: str | None = None, eval_env_ids: dict[str, Sequence[str]] | None = None,
               eval_every: int = 10, eval_episodes: int = 100, progress: bool = True, device: str = "cpu",
               resume: bool = True, env_kwargs: dict[str, Any] | None = None, time_limit_s: float | None = None,
               threads: int | None = None, replay_env_id: str | None = None) -> tuple[TransformerLM, dict[str, Any]]:
    """Fine-tune ``lm`` on ``env_id`` with group-relative RL; returns ``(lm, stats)``.

    Args:
        env_id: the RL training set (a registered id or short name).
        lm: the starting model (usually behavior-cloned); it is also the KL reference.
        config: hyper-parameters (default :class:`GRPOConfig`).
        seed: seeds sampling, minibatch order and the problems drawn.
        run_dir: TensorBoard scalars and checkpoints (``None``: neither).
        eval_env_ids: named sets, e.g. ``{"id": [...], "ood": [...]}``, evaluated greedily every
            ``eval_every`` iterations and at the end on ``eval_episodes`` problems per id.
        progress: a progress bar (in a log, a line when the count changed, at most every 30 s).
        device: ``"cpu"`` or ``"cuda"``.
        resume: continue from ``run_dir``'s checkpoint when there is one (and say so).
        env_kwargs: extra kwargs of the training env (e.g. ``format_penalty``, ``max_len``).
        time_limit_s: stop after the iteration that passes this many seconds of this call (a
            checkpoint is written there; the run resumes later with the same arguments).
        threads: torch threads (``None``: the project's policy, ``COMPGYM_THREADS`` or
            :func:`~composition_gym.agents.settings.default_threads`); restored afterwards.
        replay_env_id: the replay set of ``cfg.replay_coef`` (e.g. the SFT set): a pool of
            ``cfg.replay_episodes`` expert traces (problems ``seed + REPLAY + i``) whose teacher-forced
            loss joins every optimizer step.

    Returns:
        ``stats``: the last iteration's numbers, ``history`` (one dict per iteration), ``evals``
        (one dict of scalars per evaluation) and ``seconds``.

    On Ctrl-C (``KeyboardInterrupt``) with a ``run_dir``, the last finished iteration is saved
    (the message says where) before the interrupt goes on.
    """
    cfg = config or GRPOConfig()
    cfg.validate()
    if not isinstance(lm, TransformerLM):
        raise TypeError(f"train_grpo needs a TransformerLM, got {type(lm).__name__}")
    env_id = resolve_env_id(env_id)
    evals_ids = {k: resolve_env_ids(v) for k, v in (eval_env_ids or {}).items()}
    if cfg.replay_coef and replay_env_id is None:
        raise ValueError("replay_coef > 0 needs a replay set: pass replay_env_id (e.g. the SFT set)")
    check_device(device)
    with torch_threads(threads):
        replay = (expert_sequences([resolve_env_id(replay_env_id)], cfg.replay_episodes, seed + seeds.REPLAY)
                  if cfg.replay_coef else None)
        return _train(env_id, lm.to(device), cfg, seed, run_dir, evals_ids, eval_every, eval_episodes, progress,
                      device, resume, dict(env_kwargs or {}), time_limit_s, replay)


def _train(env_id: str, lm: TransformerLM, cfg: GRPOConfig, seed: int, run_dir: str | None,
           evals_ids: dict[str, list[str]], eval_every: int, eval_episodes: int, progress: bool, device: str,
           resume: bool, env_kwargs: dict[str, Any], time_limit_s: float | None,
           replay: Sequences | None = None) -> tuple[TransformerLM, dict]:
    ref = copy.deepcopy(lm).eval().requires_grad_(False)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (cfg.warmup + 1)))
    gen = torch.Generator(device=device).manual_seed(seed)
    state: dict[str, Any] = {"iteration": 0, "env_steps": 0, "history": [], "evals": [], "seconds": 0.0}
    path = os.path.join(run_dir, CHECKPOINT) if run_dir else None
    if path and resume and os.path.isfile(path):
        ck = torch.load(path, map_location=device, weights_only=True)  # data, never code
        if not _same_run(ck["config"], cfg) or ck["env_id"] != env_id or ck["seed"] != seed:
            raise ValueError(f"{path} was written by another run (env, seed or config differ); "
                             "use another run_dir or resume=False")
        lm.load_state_dict(ck["lm"])
        ref.load_state_dict(ck["ref"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"].cpu())
        state = ck["state"]
        print(f"resuming from iteration {state['iteration']} of {cfg.iterations} in {run_dir}", file=sys.stderr,
              flush=True)
    writer = None
    if run_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(run_dir, purge_step=state["env_steps"] or None)
    if cfg.process_reward:
        env_kwargs["process_reward"] = cfg.process_reward
    venv = make_vec(env_id, cfg.problems_per_iter * cfg.group_size, **env_kwargs)

    def run_eval() -> None:
        row: dict[str, Any] = {"iteration": state["iteration"], "env_steps": state["env_steps"]}
        for name, ids in evals_ids.items():
            row.update(report_scalars(evaluate(lm.eval(), ids, eval_episodes, seed=seeds.EVAL + seed), f"eval_{name}",
                                      per_module=False))
        state["evals"].append(row)
        if writer is not None:
            for tag, v in row.items():
                if "/" in tag:
                    writer.add_scalar(tag, v, state["env_steps"])

    def iteration() -> dict[str, Any]:
        # A function, so that one iteration's completions are freed before the next is sampled.
        t0 = time.perf_counter()
        played = sample(venv, lm, cfg, gen, seed * seeds.PROBLEM_STRIDE + state["iteration"] * cfg.problems_per_iter)
        t_sample = time.perf_counter() - t0
        scored = score(played, cfg, device)
        stats = update(lm, ref, opt, sched, scored, cfg, gen, replay)
        kl = kl_estimate(ref, scored, cfg) if not cfg.kl_coef else float("nan")
        return log_iteration(state, scored, played, stats, kl, time.perf_counter() - t0, t_sample,
                             sched.get_last_lr()[0], writer)

    def snapshot() -> dict[str, Any]:
        # Copies, not references: the update goes on changing the live tensors.
        return copy.deepcopy({"config": cfg.to_dict(), "env_id": env_id, "seed": seed, "lm": lm.state_dict(),
                              "ref": ref.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                              "gen": gen.get_state(), "state": state})

    if evals_ids and state["iteration"] == 0:
        run_eval()
    bar = progress_bar(total=cfg.iterations, initial=state["iteration"], desc="GRPO", disable=not progress, unit="it")
    t_call = time.perf_counter()
    t_start = t_call - state["seconds"]
    last = snapshot() if path else None
    try:
        while state["iteration"] < cfg.iterations:
            if time_limit_s is not None and time.perf_counter() - t_call > time_limit_s:
                if path:
                    save_checkpoint(path, last)
                    print(f"time limit of {time_limit_s:g} s reached: saved iteration {state['iteration']} of "
                          f"{cfg.iterations} to {path} (run again with the same run_dir to resume)",
                          file=sys.stderr, flush=True)
                break
            row = iteration()
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward']:.3f}", pass_=f"{row['pass_rate']:.1%}",
                            kl=f"{row['kl_ref']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if evals_ids and (state["iteration"] % eval_every == 0 or state["iteration"] == cfg.iterations):
                run_eval()
            state["seconds"] = time.perf_counter() - t_start
            if path:
                last = snapshot()
                if state["iteration"] % cfg.checkpoint_every == 0 or state["iteration"] == cfg.iterations:
                    save_checkpoint(path, last)
    except KeyboardInterrupt:
        if path:
            save_checkpoint(path, last)
            print(f"\ninterrupted: saved iteration {last['state']['iteration']} of {cfg.iterations} to {path} "
                  "(run again with the same run_dir to resume)", file=sys.stderr, flush=True)
        raise
    finally:
        bar.close()
        venv.close()
        if writer is not None:
            writer.close()
    final = state["history"][-1] if state["history"] else {}
    return lm.eval(), {**final, "history": state["history"], "evals": state["evals"],
                       "seconds": time.perf_counter() - t_start}


__all__ = ["ADVANTAGES", "GRPOConfig", "distinct_rows", "group_advantages", "kl_estimate", "length_buckets",
           "log_iteration", "sample", "save_checkpoint", "score", "token_log_probs", "train_grpo", "update"]
