"""Group-relative policy optimisation (GRPO, Dr.GRPO, RLOO) of a :class:`TransformerLM`.

PPO's clipped-ratio objective with a *group baseline* instead of a critic, at the sequence level,
in the CleanRL spirit: one file, one config dataclass, every logged number named.  Per iteration:

1. draw ``B`` problems and sample ``G`` completions of each (a group shares its problem: its
   rows are reset with the same seed) on the native vector env, with the KV-cached LM under the
   grammar mask at ``temperature``; the env gives the reward (outcome, plus ``process_reward``
   per correct intermediate when set);
2. advantages per group: ``grpo`` ``(r - mean) / std``, ``drgrpo`` ``r - mean`` (no std, which
   over-weights nearly solved groups), ``rloo`` ``r - mean of the others``; groups whose rewards
   all agree carry no signal and can be dropped (``drop_zero_variance``);
3. ``epochs`` passes of minibatches over the kept completions: ratio of the new to the sampling
   policy per token, clipped at ``1 ± clip_eps``, the sequence's advantage on every token;
   token-mean or sequence-mean; optional KL to the reference (the starting, behavior-cloned
   model), always measured; AdamW with linear warm-up then a constant rate; gradient clipping.

Why not SB3's PPO: its per-token minibatches of a few hundred tokens hold about a dozen episodes,
so each update is mostly noise for a policy that already solves most problems; here one update
sees hundreds of whole episodes, and the baseline is free.

TensorBoard (``run_dir``): ``grpo/reward``, ``grpo/pass_rate``, ``grpo/zero_variance_share``,
``grpo/kl_ref``, ``grpo/entropy``, ``grpo/clip_fraction``, ``grpo/tokens_per_s``, ``grpo/lr``,
``grpo/loss``, and ``eval_<set>/…`` (see :mod:`composition_gym.agents.callbacks`), against env
steps (sampled tokens) like the SB3 runs.  ``run_dir/grpo_checkpoint.pt`` is written every
``checkpoint_every`` iterations; a run started again on the same ``run_dir`` resumes from it and
ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from composition_gym.agents.callbacks import report_scalars
from composition_gym.agents.evaluation import evaluate
from composition_gym.agents.sampling import LMChooser, make_vec, play
from composition_gym.agents.settings import ADVANTAGES, GRPOConfig, check_device
from composition_gym.agents.transformer import TransformerLM
from composition_gym.registration import resolve_env_id, resolve_env_ids

CHECKPOINT = "grpo_checkpoint.pt"
PROBLEM_SEED_STRIDE = 1_000_003  # problem seeds of run seed s start at s * stride: runs do not share problems


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


def token_log_probs(lm: TransformerLM, ids: torch.Tensor, prompt_len: torch.Tensor, actions: torch.Tensor,
                    masks: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(action), entropy)`` ``[N, S]`` of each written token under the tempered, masked policy.

    One teacher-forced forward over ``ids`` (prompt + trace); the logits before trace token ``s``
    sit at position ``prompt_len + s - 1``.
    """
    logits = lm(ids)
    n, s = actions.shape
    masks = masks | ~masks.any(dim=-1, keepdim=True)  # padding steps (after a row's end): any token, no NaN
    pos = (prompt_len[:, None] + torch.arange(s, device=ids.device)[None, :] - 1).clamp(max=ids.shape[1] - 1)
    logits = logits[torch.arange(n, device=ids.device)[:, None], pos] / temperature  # [N, S, V]
    logp_all = torch.log_softmax(logits.masked_fill(~masks, float("-inf")), dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    probs = logp_all.exp()
    entropy = -(probs * logp_all.masked_fill(~masks, 0.0)).sum(-1)
    return logp, entropy


def _aggregate(values: torch.Tensor, valid: torch.Tensor, how: str) -> torch.Tensor:
    if how == "token":
        return (values * valid).sum() / valid.sum().clamp(min=1)
    return ((values * valid).sum(1) / valid.sum(1).clamp(min=1)).mean()


def _save(path: str, state: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint intact


def train_grpo(env_id: str, lm: TransformerLM, config: GRPOConfig | None = None, *, seed: int = 0,
               run_dir: str | None = None, eval_env_ids: dict[str, Sequence[str]] | None = None,
               eval_every: int = 10, eval_episodes: int = 100, progress: bool = True, device: str = "cpu",
               resume: bool = True, env_kwargs: dict[str, Any] | None = None,
               time_limit_s: float | None = None) -> tuple[TransformerLM, dict[str, Any]]:
    """Fine-tune ``lm`` on ``env_id`` with group-relative RL; returns ``(lm, stats)``.

    Args:
        env_id: the RL training set (a registered id or short name).
        lm: the starting model (usually behavior-cloned); it is also the KL reference.
        config: hyper-parameters (default :class:`GRPOConfig`).
        seed: seeds sampling, minibatch order and the problems drawn.
        run_dir: TensorBoard scalars and checkpoints (``None``: neither).
        eval_env_ids: named sets, e.g. ``{"id": [...], "ood": [...]}``, evaluated greedily every
            ``eval_every`` iterations and at the end on ``eval_episodes`` problems per id.
        progress: a tqdm bar (one line per update when stderr is not a terminal).
        device: ``"cpu"`` or ``"cuda"``.
        resume: continue from ``run_dir``'s checkpoint when there is one.
        env_kwargs: extra kwargs of the training env (e.g. ``format_penalty``, ``max_len``).
        time_limit_s: stop after the iteration that passes this many seconds of this call (a
            checkpoint is written there; the run resumes later with the same arguments).

    Returns:
        ``stats``: the last iteration's numbers, ``history`` (one dict per iteration), ``evals``
        (one dict of scalars per evaluation) and ``seconds``.
    """
    cfg = config or GRPOConfig()
    cfg.validate()
    if not isinstance(lm, TransformerLM):
        raise TypeError(f"train_grpo needs a TransformerLM, got {type(lm).__name__}")
    env_id = resolve_env_id(env_id)
    evals_ids = {k: resolve_env_ids(v) for k, v in (eval_env_ids or {}).items()}
    check_device(device)
    lm = lm.to(device)
    ref = copy.deepcopy(lm).eval().requires_grad_(False)
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (cfg.warmup + 1)))
    gen = torch.Generator(device=device).manual_seed(seed)
    b, g = cfg.problems_per_iter, cfg.group_size
    state = {"iteration": 0, "env_steps": 0, "history": [], "evals": [], "seconds": 0.0}
    path = os.path.join(run_dir, CHECKPOINT) if run_dir else None
    if path and resume and os.path.isfile(path):
        ck = torch.load(path, map_location=device, weights_only=True)  # data, never code
        if ck["config"] != cfg.to_dict() or ck["env_id"] != env_id or ck["seed"] != seed:
            raise ValueError(f"{path} was written by another run (env, seed or config differ); "
                             "use another run_dir or resume=False")
        lm.load_state_dict(ck["lm"])
        ref.load_state_dict(ck["ref"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        gen.set_state(ck["gen"].cpu())
        state = ck["state"]
    writer = None
    if run_dir:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(run_dir, purge_step=state["env_steps"] or None)
    env_kwargs = dict(env_kwargs or {})
    if cfg.process_reward:
        env_kwargs["process_reward"] = cfg.process_reward
    venv = make_vec(env_id, b * g, **env_kwargs)

    def run_eval() -> None:
        row: dict[str, Any] = {"iteration": state["iteration"], "env_steps": state["env_steps"]}
        for name, ids in evals_ids.items():
            row.update(report_scalars(evaluate(lm.eval(), ids, eval_episodes, seed=10_000 + seed), f"eval_{name}",
                                      per_module=False))
        state["evals"].append(row)
        if writer is not None:
            for tag, v in row.items():
                if "/" in tag:
                    writer.add_scalar(tag, v, state["env_steps"])

    def checkpoint() -> dict[str, Any]:
        return {"config": cfg.to_dict(), "env_id": env_id, "seed": seed, "lm": lm.state_dict(), "ref": ref.state_dict(),
                "opt": opt.state_dict(), "sched": sched.state_dict(), "gen": gen.get_state(), "state": state}

    if evals_ids and state["iteration"] == 0:
        run_eval()
    tty = sys.stderr.isatty()
    bar = tqdm(total=cfg.iterations, initial=state["iteration"], desc="GRPO", disable=not progress,
               mininterval=0.5 if tty else 30.0, ascii=not tty, dynamic_ncols=tty, unit="it")
    t_call = time.perf_counter()
    t_start = t_call - state["seconds"]
    while state["iteration"] < cfg.iterations:
        if time_limit_s is not None and time.perf_counter() - t_call > time_limit_s:
            if path:
                _save(path, checkpoint())
            break
        it = state["iteration"]
        t0 = time.perf_counter()
        # 1. sample G completions of B problems; group j's rows share problem seed `base + j`
        base = seed * PROBLEM_SEED_STRIDE + it * b
        lm.eval()
        played = play(venv, [base + j for j in range(b) for _ in range(g)], LMChooser(lm, cfg.temperature, gen),
                      record_masks=True)
        t_sample = time.perf_counter() - t0
        rewards = torch.as_tensor(played.reward, dtype=torch.float32).view(b, g)
        adv = group_advantages(rewards, cfg.advantage).to(device)
        informative = (rewards.max(dim=1).values > rewards.min(dim=1).values)
        keep = informative.repeat_interleave(g) if cfg.drop_zero_variance else torch.ones(b * g, dtype=torch.bool)
        rows = torch.nonzero(keep).squeeze(1)
        steps = torch.as_tensor(played.steps)
        n_tokens = int(steps.sum())
        # 2. the sampling policy's and the reference's log-probs, then PPO epochs over minibatches
        width = int((torch.as_tensor(played.prompt_len) + steps).max())
        ids = torch.as_tensor(played.obs[:, :width], device=device)
        prompt_len = torch.as_tensor(played.prompt_len, device=device)
        actions = torch.as_tensor(played.actions, device=device)
        masks = torch.as_tensor(played.masks, device=device)
        valid = (torch.arange(actions.shape[1], device=device)[None, :] < steps.to(device)[:, None]).float()
        adv = adv.view(-1)
        logs: dict[str, list[float]] = {"loss": [], "kl_ref": [], "entropy": [], "clip_fraction": []}
        if rows.numel():
            with torch.no_grad():
                old_logp = torch.empty_like(valid)
                ref_logp = torch.empty_like(valid)
                for chunk in rows.split(cfg.minibatch_size):
                    args = (ids[chunk], prompt_len[chunk], actions[chunk], masks[chunk], cfg.temperature)
                    old_logp[chunk] = token_log_probs(lm, *args)[0]
                    ref_logp[chunk] = token_log_probs(ref, *args)[0]
            lm.train()
            for _ in range(cfg.epochs):
                order = rows[torch.randperm(rows.numel(), generator=gen, device=device)]
                for mb in order.split(cfg.minibatch_size):
                    logp, entropy = token_log_probs(lm, ids[mb], prompt_len[mb], actions[mb], masks[mb],
                                                    cfg.temperature)
                    v = valid[mb]
                    ratio = (logp - old_logp[mb]).exp()
                    a = adv[mb][:, None]
                    pg = -torch.minimum(ratio * a, ratio.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps) * a)
                    log_r = ref_logp[mb] - logp
                    kl = log_r.exp() - log_r - 1  # k3: unbiased, non-negative estimate of KL(pi || ref)
                    loss = _aggregate(pg, v, cfg.loss_agg) + cfg.kl_coef * _aggregate(kl, v, cfg.loss_agg)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(lm.parameters(), cfg.grad_clip)
                    opt.step()
                    sched.step()
                    logs["loss"].append(float(loss.detach()))
                    logs["kl_ref"].append(float(_aggregate(kl.detach(), v, "token")))
                    logs["entropy"].append(float(_aggregate(entropy.detach(), v, "token")))
                    logs["clip_fraction"].append(float(_aggregate(((ratio - 1).abs() > cfg.clip_eps).float(), v,
                                                                  "token")))
            lm.eval()
        seconds = time.perf_counter() - t0
        state["iteration"] = it + 1
        state["env_steps"] += n_tokens
        row = {"iteration": it + 1, "env_steps": state["env_steps"], "reward": float(rewards.mean()),
               "pass_rate": float(played.success.mean()),
               "zero_variance_share": float(1 - informative.float().mean()),
               "tokens_per_s": n_tokens / seconds, "sample_share": t_sample / seconds,
               "lr": sched.get_last_lr()[0], **{k: float(np.mean(v)) if v else 0.0 for k, v in logs.items()}}
        state["history"].append(row)
        if writer is not None:
            for k, v in row.items():
                if k not in ("iteration", "env_steps"):
                    writer.add_scalar(f"grpo/{k}", v, state["env_steps"])
        bar.update(1)
        bar.set_postfix(reward=f"{row['reward']:.3f}", pass_=f"{row['pass_rate']:.1%}", kl=f"{row['kl_ref']:.4f}",
                        tok_s=f"{row['tokens_per_s']:.0f}")
        if evals_ids and (state["iteration"] % eval_every == 0 or state["iteration"] == cfg.iterations):
            run_eval()
        state["seconds"] = time.perf_counter() - t_start
        if path and (state["iteration"] % cfg.checkpoint_every == 0 or state["iteration"] == cfg.iterations):
            _save(path, checkpoint())
    bar.close()
    venv.close()
    if writer is not None:
        writer.close()
    last = state["history"][-1] if state["history"] else {}
    return lm.eval(), {**last, "history": state["history"], "evals": state["evals"],
                       "seconds": time.perf_counter() - t_start}


def bc_then_grpo(env_id: str | Sequence[str], bc_episodes: int, rl_env_id: str, config: GRPOConfig | None = None, *,
                 seed: int = 0, run_dir: str | None = None, bc_kwargs: dict[str, Any] | None = None,
                 **grpo_kwargs: Any) -> tuple[TransformerLM, dict[str, Any]]:
    """Behavior cloning on ``env_id`` (``bc_episodes`` expert traces), then :func:`train_grpo` on ``rl_env_id``.

    ``bc_kwargs`` go to :func:`~composition_gym.agents.bc.behavior_cloning`, the rest to
    :func:`train_grpo`.  Returns ``(lm, {"bc": bc_stats, "grpo": grpo_stats})``.
    """
    from composition_gym.agents.bc import behavior_cloning

    bc_kwargs = dict(bc_kwargs or {})
    bc_kwargs.setdefault("progress", grpo_kwargs.get("progress", True))
    lm, bc_stats = behavior_cloning(env_id, bc_episodes, seed=seed, **bc_kwargs)
    lm, stats = train_grpo(rl_env_id, lm, config, seed=seed, run_dir=run_dir, **grpo_kwargs)
    return lm, {"bc": bc_stats, "grpo": stats}


__all__ = ["ADVANTAGES", "GRPOConfig", "bc_then_grpo", "group_advantages", "token_log_probs", "train_grpo"]
