"""Behavior cloning of the transformer LM on expert traces, with optional DAgger rounds.

Teacher forcing: each expert episode is one sequence ``prompt + trace``; one forward yields the
next-token logits at every position, and the loss counts trace tokens only (the prompt is given,
not generated).  DAgger rounds roll out the current LM greedily (grammar-masked, as it will be
played), label every state it visited with the environment's expert, and add those trajectories
with their expert labels to the data set: the same one-forward-per-sequence training, where the
target at each position is the expert's token for that prefix instead of the next token.

Logged to TensorBoard under ``bc/`` against the gradient step: ``loss``, ``lr``, and every
``eval_every`` steps ``heldout_token_acc``, ``heldout_success``, ``heldout_success/<short id>``;
``dagger_*`` after each DAgger round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import composition_gym  # noqa: F401  (registers the env ids)
from composition_gym.agents.agent import LMAgent
from composition_gym.agents.evaluation import evaluate, rollout
from composition_gym.agents.sampling import make_vec, play
from composition_gym.agents.settings import BC_PRESETS, BCConfig, bc_config, check_device, progress_kwargs, torch_threads
from composition_gym.agents.transformer import TransformerConfig, TransformerLM
from composition_gym.registration import resolve_env_ids, short_name
from composition_gym.tokens import PAD_ID

IGNORE = -100  # cross_entropy's ignore_index: prompt positions and padding carry no loss

#: The model shape BC uses by default (see :class:`TransformerConfig` for why).
DEFAULT_CONFIG = TransformerConfig()
HELDOUT_SEED_OFFSET = 1_000_003  # held-out episodes use seeds far from the training ones


@dataclass
class Sequences:
    """Padded training sequences: ``inputs[i, t]`` predicts ``targets[i, t]`` (``IGNORE`` = no loss)."""

    inputs: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @staticmethod
    def from_lists(inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> Sequences:
        """Right-pad lists of equal-length ``(inputs, targets)`` rows."""
        n, width = len(inputs), max(len(x) for x in inputs)
        x = torch.full((n, width), PAD_ID, dtype=torch.int64)
        y = torch.full((n, width), IGNORE, dtype=torch.int64)
        for i, (a, b) in enumerate(zip(inputs, targets)):
            x[i, : len(a)] = torch.as_tensor(a)
            y[i, : len(b)] = torch.as_tensor(b)
        return Sequences(x, y)

    def cat(self, other: Sequences) -> Sequences:
        """Both data sets in one (padding the narrower)."""
        w = max(self.inputs.shape[1], other.inputs.shape[1])

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            return F.pad(t, (0, w - t.shape[1]), value=value)

        return Sequences(torch.cat([pad(self.inputs, PAD_ID), pad(other.inputs, PAD_ID)]),
                         torch.cat([pad(self.targets, IGNORE), pad(other.targets, IGNORE)]))


def expert_sequences(env_ids: Sequence[str], episodes: int, seed: int, *, batch_size: int = 1024) -> Sequences:
    """Teacher-forcing data from ``episodes`` expert episodes, spread round-robin over ``env_ids``.

    Episode ``i`` plays ``env_ids[i % n]`` reset with seed ``seed + i``; the expert is the env's
    own oracle, played ``batch_size`` episodes at a time on the native vector env.
    """
    rows: list[tuple[list[int], list[int]] | None] = [None] * episodes
    for k, env_id in enumerate(env_ids):
        index = list(range(k, episodes, len(env_ids)))
        if not index:
            continue
        venv = make_vec(env_id, min(batch_size, len(index)))
        for start in range(0, len(index), venv.num_envs):
            chunk = index[start:start + venv.num_envs]
            played = play(venv, [seed + i for i in chunk], None)
            for j, i in enumerate(chunk):
                obs, prompt_len = played.obs[j], int(played.prompt_len[j])
                seq = obs[: int(np.count_nonzero(obs))].tolist()
                # Position t predicts token t+1; only positions whose next token is part of the trace count.
                rows[i] = (seq[:-1], [IGNORE] * (prompt_len - 1) + seq[prompt_len:])
        venv.close()
    return Sequences.from_lists([r[0] for r in rows], [r[1] for r in rows])


def dagger_sequences(lm: TransformerLM, env_ids: Sequence[str], episodes: int, seed: int) -> tuple[Sequences, float]:
    """Roll out ``lm`` greedily and label each visited state with the expert's token.

    Returns the labelled trajectories and the rollouts' success rate.
    """
    inputs, targets, successes = [], [], []
    per_env = [episodes // len(env_ids) + (k < episodes % len(env_ids)) for k in range(len(env_ids))]
    agent = LMAgent(lm)
    for env_id, n in zip(env_ids, per_env):
        if n == 0:
            continue
        for ep in rollout(agent, env_id, [seed + i for i in range(n)], record_expert=True):
            seq, labels = ep.tokens, ep.expert_labels
            prompt_len = len(seq) - len(labels)
            inputs.append(seq[:-1])
            targets.append([IGNORE] * (prompt_len - 1) + labels)
            successes.append(ep.success)
    return Sequences.from_lists(inputs, targets), float(np.mean(successes)) if successes else 0.0


@torch.no_grad()
def token_accuracy(lm: TransformerLM, data: Sequences, batch_size: int = 256) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of greedy next-token prediction on the positions that carry a target."""
    lm.eval()
    correct = total = 0
    loss_sum = 0.0
    for start in range(0, len(data), batch_size):
        x, y = _trimmed(data, torch.arange(start, min(start + batch_size, len(data))), lm.head.weight.device)
        logits = lm(x)
        keep = y != IGNORE
        loss_sum += float(F.cross_entropy(logits[keep], y[keep], reduction="sum"))
        correct += int((logits.argmax(-1)[keep] == y[keep]).sum())
        total += int(keep.sum())
    return loss_sum / max(total, 1), correct / max(total, 1)


def _trimmed(data: Sequences, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of ``data`` cut to their longest real prefix, on ``device``."""
    x, y = data.inputs[idx], data.targets[idx]
    width = max(int((x != PAD_ID).sum(1).max()), 1)
    return x[:, :width].to(device), y[:, :width].to(device)


def _random_batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless mini-batches of indices: a fresh permutation each epoch (the last partial batch dropped).

    Batches are *not* bucketed by length: grouping similar lengths saved ~20 % padding but groups
    similar cascades too (length follows the routing), which slowed learning in our runs.
    """
    while True:
        perm = torch.randperm(n, generator=generator)
        for start in range(0, max(n - batch_size, 0) + 1, batch_size):
            yield perm[start : start + batch_size]


def _fit(lm: TransformerLM, data: Sequences, cfg: BCConfig, *, generator: torch.Generator, writer, step0: int,
         desc: str, progress: bool, on_eval: Callable[[int], None] | None = None) -> tuple[int, float]:
    """AdamW with linear warm-up and cosine decay over ``cfg.epochs`` passes; returns (steps, last loss).

    ``on_eval(global_step)`` runs every ``cfg.eval_every`` gradient steps (the held-out curves).
    """
    steps_per_epoch = max(1, math.ceil(len(data) / cfg.batch_size))
    total = max(1, round(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))))
    lm.train()
    batches = _random_batches(len(data), cfg.batch_size, generator)
    loss_val, ema = float("nan"), None
    bar = tqdm(range(total), desc=desc, disable=not progress, leave=False, unit="step", **progress_kwargs())
    for s in bar:
        x, y = _trimmed(data, next(batches), lm.head.weight.device)
        logits = lm(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        loss_val = loss.item()
        ema = loss_val if ema is None else 0.95 * ema + 0.05 * loss_val
        if s % 10 == 0 or s == total - 1:
            bar.set_postfix(loss=f"{ema:.3f}")
            if writer is not None:
                writer.add_scalar("bc/loss", loss_val, step0 + s)
                writer.add_scalar("bc/lr", sched.get_last_lr()[0], step0 + s)
        # The last step is left to the caller's final evaluation (so it is logged once).
        if on_eval is not None and cfg.eval_every and (s + 1) % cfg.eval_every == 0 and s + 1 < total:
            on_eval(step0 + s + 1)
            lm.train()
    bar.close()
    lm.eval()
    return total, loss_val


def behavior_cloning(
    env_id: str | Sequence[str],
    episodes: int | None = None,
    *,
    settings: BCConfig | str | None = None,
    config: TransformerConfig | None = None,
    epochs: float | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    dagger_rounds: int | None = None,
    dagger_episodes: int | None = None,
    eval_episodes: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    tensorboard_log: str | None = None,
    progress: bool = True,
    lm: TransformerLM | None = None,
    threads: int | None = None,
    device: str = "cpu",
) -> tuple[TransformerLM, dict[str, float]]:
    """Train a :class:`TransformerLM` to imitate the expert on ``env_id`` (one id or several).

    The budget comes from ``settings`` (a :class:`~composition_gym.agents.settings.BCConfig` or a
    name of :data:`~composition_gym.agents.settings.BC_PRESETS`: ``"tiny"``, ``"demo"``,
    ``"reproduce"``, ``"default"``); every explicit keyword below overrides that field.

    Args:
        env_id: registered id(s); episodes are spread round-robin over them.
        episodes: number of expert episodes (training traces).
        settings: the BC budget (default: the ``"default"`` preset).
        config: model shape (default :data:`DEFAULT_CONFIG`); ignored when ``lm`` is given.
        epochs, batch_size, lr, weight_decay, dagger_rounds, dagger_episodes, eval_episodes,
            eval_every: override the fields of ``settings`` of the same name (see ``BCConfig``).
        seed: seeds the model init, data order and episode seeds (episode ``i`` resets with
            ``seed + i``; held-out episodes with ``seed + 1_000_003 + i``).
        tensorboard_log: a run directory for TensorBoard scalars under ``bc/`` (``None``: none);
            their x-axis is the gradient step.
        progress: show tqdm progress bars.
        lm: continue training this model instead of a new one.
        threads: torch threads for the run (``None``: the project's policy,
            :func:`~composition_gym.agents.settings.default_threads`); restored afterwards.
        device: torch device of the model and its batches (e.g. ``"cuda"``); the expert's data is
            built on the CPU and the returned model stays on ``device``.

    Returns:
        ``(lm, stats)``; ``stats`` holds ``loss``, ``token_acc`` (held-out), ``heldout_success``,
        ``train_tokens`` (trace tokens with a loss), ``seconds``, ``threads``.
    """
    ids = resolve_env_ids(env_id)
    check_device(device)
    cfg = bc_config(settings, episodes=episodes, epochs=epochs, batch_size=batch_size, lr=lr,
                    weight_decay=weight_decay, dagger_rounds=dagger_rounds, dagger_episodes=dagger_episodes,
                    eval_episodes=eval_episodes, eval_every=eval_every)
    with torch_threads(threads) as n_threads:
        lm, stats = _behavior_cloning(ids, cfg, config=config, seed=seed, tensorboard_log=tensorboard_log,
                                      progress=progress, lm=lm, device=device)
    stats["threads"] = float(n_threads)
    return lm, stats


def _behavior_cloning(ids: list[str], cfg: BCConfig, *, config: TransformerConfig | None, seed: int,
                      tensorboard_log: str | None, progress: bool, lm: TransformerLM | None,
                      device: str = "cpu") -> tuple[TransformerLM, dict[str, float]]:
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if lm is None:
        lm = TransformerLM(config or DEFAULT_CONFIG)  # built on the CPU: the same init on every device
    lm = lm.to(device)
    writer = None
    if tensorboard_log is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=tensorboard_log)

    data = expert_sequences(ids, cfg.episodes, seed)
    heldout = expert_sequences(ids, min(cfg.eval_episodes, 500), seed + HELDOUT_SEED_OFFSET) if cfg.eval_episodes else None

    def heldout_eval(step: int) -> dict[str, float]:
        """Held-out token accuracy and greedy success, logged at gradient step ``step``."""
        out: dict[str, float] = {}
        out["heldout_loss"], out["token_acc"] = token_accuracy(lm, heldout)
        report = evaluate(LMAgent(lm), ids, episodes=max(1, cfg.eval_episodes // len(ids)),
                          seed=seed + HELDOUT_SEED_OFFSET)
        out["heldout_success"] = report.success
        if writer is not None:
            writer.add_scalar("bc/heldout_token_acc", out["token_acc"], step)
            writer.add_scalar("bc/heldout_success", out["heldout_success"], step)
            for env, value in report.success_by_env.items():
                writer.add_scalar(f"bc/heldout_success/{short_name(env)}", value, step)
        return out

    # Curves during training only when someone reads them (a writer); the final point always.
    on_eval = heldout_eval if heldout is not None and writer is not None else None
    steps, loss = _fit(lm, data, cfg, generator=gen, writer=writer, step0=0, desc="BC", progress=progress,
                       on_eval=on_eval)
    stats: dict[str, float] = {"loss": loss}
    for r in range(cfg.dagger_rounds):
        n = cfg.dagger_episodes or max(1, cfg.episodes // 2)
        extra, rollout_success = dagger_sequences(lm, ids, n, seed + 2 * HELDOUT_SEED_OFFSET + r * n)
        data = data.cat(extra)
        if writer is not None:
            writer.add_scalar("bc/dagger_rollout_success", rollout_success, steps)
            writer.add_scalar("bc/dagger_dataset", len(data), steps)
        more, loss = _fit(lm, data, cfg, generator=gen, writer=writer, step0=steps,
                          desc=f"DAgger {r + 1}/{cfg.dagger_rounds}", progress=progress, on_eval=on_eval)
        steps += more
        stats[f"dagger_{r + 1}_rollout_success"] = rollout_success
    stats["loss"] = loss
    stats["train_tokens"] = float((data.targets != IGNORE).sum())
    stats["steps"] = float(steps)
    if heldout is not None:
        stats.update(heldout_eval(steps))
    stats["seconds"] = time.perf_counter() - start
    if writer is not None:
        writer.close()
    return lm, stats


__all__ = ["BCConfig", "BC_PRESETS", "DEFAULT_CONFIG", "Sequences", "behavior_cloning", "dagger_sequences", "expert_sequences", "token_accuracy"]
