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

A run with a ``run_dir`` checkpoints and resumes bit-identically (:func:`behavior_cloning`): the
fit's optimizer, schedule, batch order and random state are part of it, which is why this one
algorithm runs past 400 lines; what it shares with PPO (signals, fingerprints, loading) is
:mod:`composition_gym.agents.resume`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import composition_gym  # noqa: F401  (registers the env ids)
from composition_gym.agents import seeds
from composition_gym.agents.agent import LMAgent
from composition_gym.agents.coverage import merge_profiles, trained_on
from composition_gym.agents.evaluation import evaluate, rollout
from composition_gym.agents.resume import Interrupts, fingerprint, load_checkpoint, say, weights_digest
from composition_gym.agents.sampling import make_vec, play
from composition_gym.agents.settings import BC_PRESETS, BCConfig, bc_config, check_device, progress_bar, torch_threads
from composition_gym.agents.transformer import TransformerConfig, TransformerLM
from composition_gym.atomic import atomic_write
from composition_gym.registration import resolve_env_ids, short_name
from composition_gym.tokens import PAD_ID

IGNORE = -100  # cross_entropy's ignore_index: prompt positions and padding carry no loss

#: The model shape BC uses by default (see :class:`TransformerConfig` for why).
DEFAULT_CONFIG = TransformerConfig()


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
        x, y = trimmed_batch(data, torch.arange(start, min(start + batch_size, len(data))), lm.head.weight.device)
        logits = lm(x)
        keep = y != IGNORE
        loss_sum += float(F.cross_entropy(logits[keep], y[keep], reduction="sum"))
        correct += int((logits.argmax(-1)[keep] == y[keep]).sum())
        total += int(keep.sum())
    return loss_sum / max(total, 1), correct / max(total, 1)


def trimmed_batch(data: Sequences, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``idx`` of ``data`` cut to their longest real prefix, on ``device``."""
    x, y = data.inputs[idx], data.targets[idx]
    width = max(int((x != PAD_ID).sum(1).max()), 1)
    return x[:, :width].to(device), y[:, :width].to(device)


class _Batches:
    """Endless mini-batches of indices: a fresh permutation each epoch (the last partial batch dropped).

    Batches are *not* bucketed by length: grouping similar lengths saved ~20 % padding but groups
    similar cascades too (length follows the routing), which slowed learning in our runs.

    :meth:`state` and :meth:`restore` put a resumed run on the same batch as the killed one: the
    generator's state before the current permutation was drawn, and the position in it.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self._perm: torch.Tensor | None = None
        self._pos = 0
        self._before: torch.Tensor | None = None

    def __next__(self) -> torch.Tensor:
        if self._perm is None or self._pos > max(self.n - self.batch_size, 0):
            self._before = self.generator.get_state()
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        batch = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return batch

    def state(self) -> dict[str, Any]:
        """What :meth:`restore` needs (tensors and ints: a ``weights_only`` checkpoint holds it)."""
        drawn = self._perm is not None
        return {"generator": self._before if drawn else self.generator.get_state(), "pos": self._pos, "drawn": drawn}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue exactly where the run that wrote ``state`` was."""
        self.generator.set_state(state["generator"])
        if state["drawn"]:
            self._before = state["generator"]
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = int(state["pos"])


def _fit(lm: TransformerLM, data: Sequences, cfg: BCConfig, *, generator: torch.Generator, writer, step0: int,
         desc: str, progress: bool, on_eval: Callable[[int], None] | None = None, guard: Interrupts | None = None,
         resume: dict[str, Any] | None = None,
         save: Callable[[dict[str, Any]], None] | None = None) -> tuple[int, float]:
    """AdamW with linear warm-up and cosine decay over ``cfg.epochs`` passes; returns (steps, last loss).

    ``on_eval(global_step)`` runs every ``cfg.eval_every`` gradient steps (the held-out curves).
    ``save(fit_state)`` is called every ``cfg.checkpoint_every`` global steps and, on an interrupt,
    with the state after the last whole step; ``resume`` (such a state) continues from it.
    """
    guard = guard or Interrupts()
    steps_per_epoch = max(1, math.ceil(len(data) / cfg.batch_size))
    total = max(1, round(cfg.epochs * steps_per_epoch))
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / total, 1.0)))))
    batches = _Batches(len(data), cfg.batch_size, generator)
    done, loss_val, ema = 0, float("nan"), None
    if resume is not None:
        opt.load_state_dict(resume["opt"])
        sched.load_state_dict(resume["sched"])
        batches.restore(resume["batches"])
        torch.set_rng_state(resume["rng"])
        done, loss_val, ema = int(resume["step"]), float(resume["loss"]), resume["ema"]

    def state() -> dict[str, Any]:
        return {"step": done, "total": total, "opt": opt.state_dict(), "sched": sched.state_dict(),
                "batches": batches.state(), "rng": torch.get_rng_state(), "loss": loss_val, "ema": ema}

    lm.train()
    bar = progress_bar(total=total, initial=done, desc=desc, disable=not progress, leave=False, unit="step")
    try:
        for s in range(done, total):
            with guard.step():
                x, y = trimmed_batch(data, next(batches), lm.head.weight.device)
                logits = lm(x)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
                opt.step()
                sched.step()
                loss_val = loss.item()
                ema = loss_val if ema is None else 0.95 * ema + 0.05 * loss_val
                done = s + 1
                if s % 10 == 0 or s == total - 1:
                    bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
                    if writer is not None:
                        writer.add_scalar("bc/loss", loss_val, step0 + s)
                        writer.add_scalar("bc/lr", sched.get_last_lr()[0], step0 + s)
            bar.update(1)
            # The last step is left to the caller's final evaluation (so it is logged once).
            if on_eval is not None and cfg.eval_every and (s + 1) % cfg.eval_every == 0 and s + 1 < total:
                on_eval(step0 + s + 1)
                lm.train()
            if save is not None and (step0 + done) % cfg.checkpoint_every == 0 and done < total:
                save(state())
    except KeyboardInterrupt:
        if save is not None and not guard.torn:
            save(state())
        raise
    finally:
        bar.close()
        lm.eval()
    return total, loss_val


def behavior_cloning(
    env_id: str | Sequence[str],
    episodes: int | None = None,
    *,
    settings: BCConfig | str | None = None,
    config: TransformerConfig | None = None,
    seed: int = 0,
    tensorboard_log: str | None = None,
    run_dir: str | None = None,
    resume: bool = True,
    progress: bool = True,
    lm: TransformerLM | None = None,
    threads: int | None = None,
    device: str = "cpu",
    extra: Sequences | None = None,
    **changes: Any,
) -> tuple[TransformerLM, dict[str, float]]:
    """Train a :class:`TransformerLM` to imitate the expert on ``env_id`` (one id or several).

    The budget comes from ``settings`` (a :class:`~composition_gym.agents.settings.BCConfig` or a
    name of :data:`~composition_gym.agents.settings.BC_PRESETS`: ``"tiny"``, ``"demo"``,
    ``"reproduce"``, ``"default"``); ``changes`` are :class:`BCConfig` fields replacing the
    settings' (``epochs=2``, ``dagger_rounds=1`` …; ``None`` leaves a field alone, an unknown name is
    a ``TypeError``).

    With a ``run_dir``, the run writes ``bc_checkpoint.pt`` there every ``checkpoint_every``
    gradient steps, at every DAgger round, when it finishes, and when it is interrupted (Ctrl-C or
    SIGTERM: the step in progress completes first, then the checkpoint is written and the
    ``KeyboardInterrupt`` goes on); the same call again resumes from it and ends with the same
    weights as a run that was never interrupted (same thread count), printing
    ``resuming BC from gradient step K of N in DIR`` on stderr.  A finished run's checkpoint makes
    the same call return its model at once.

    Args:
        env_id: registered id(s); episodes are spread round-robin over them.
        episodes: number of expert episodes (training traces).
        settings: the BC budget (default: the ``"default"`` preset).
        config: model shape (default :data:`DEFAULT_CONFIG`); ignored when ``lm`` is given.
        seed: seeds the model init, data order and episode seeds (episode ``i`` resets with
            ``seed + i``; held-out episodes with ``seed + HELDOUT + i``: :mod:`~.seeds`).
        tensorboard_log: a run directory for TensorBoard scalars under ``bc/`` (``None``: ``run_dir``,
            or none); their x-axis is the gradient step.
        run_dir: the checkpoint directory (``None``: no checkpoints).
        resume: continue from ``run_dir``'s checkpoint when there is one (``False``: start over and
            overwrite it).
        progress: show tqdm progress bars.
        lm: continue training this model instead of a new one.
        extra: more training sequences appended to the expert data (e.g. a replay pool of another
            set: :func:`expert_sequences`).
        threads: torch threads for the run (``None``: the project's policy,
            :func:`~composition_gym.agents.settings.resolve_threads`); restored afterwards.
        device: torch device of the model and its batches (e.g. ``"cuda"``); the expert's data is
            built on the CPU and the returned model stays on ``device``.

    Returns:
        ``(lm, stats)``; ``stats`` holds ``loss``, ``token_acc`` (held-out), ``heldout_success``,
        ``train_tokens`` (trace tokens with a loss), ``seconds``, ``threads``.

    Raises:
        ValueError: a bad setting, a device this machine lacks, or a ``run_dir`` whose checkpoint
            another run (other ids, settings, seed or starting weights) wrote.
    """
    ids = resolve_env_ids(env_id)
    check_device(device)
    cfg = bc_config(settings, episodes=episodes, **changes)
    with torch_threads(threads) as n_threads:
        lm, stats = _behavior_cloning(ids, cfg, config=config, seed=seed, tensorboard_log=tensorboard_log or run_dir,
                                      run_dir=run_dir, resume=resume, progress=progress, lm=lm, device=device,
                                      extra=extra)
    stats["threads"] = float(n_threads)
    return lm, stats


def _fingerprint(ids: list[str], cfg: BCConfig, config: TransformerConfig, seed: int, lm: TransformerLM | None,
                 device: str, extra: Sequences | None = None) -> str:
    """What the run computes: not how often it logs or checkpoints, nor its thread count."""
    plain = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("eval_every", "checkpoint_every")}
    parts = {} if extra is None else {"extra": hashlib.sha256(extra.inputs.numpy().tobytes()
                                                                + extra.targets.numpy().tobytes()).hexdigest()}
    return fingerprint(ids=ids, bc=plain, model=config, seed=seed, device=torch.device(device).type,
                       start=None if lm is None else weights_digest(lm), **parts)


def _behavior_cloning(ids: list[str], cfg: BCConfig, *, config: TransformerConfig | None, seed: int,
                      tensorboard_log: str | None, run_dir: str | None, resume: bool, progress: bool,
                      lm: TransformerLM | None, device: str = "cpu",
                      extra: Sequences | None = None) -> tuple[TransformerLM, dict[str, float]]:
    start = time.perf_counter()
    path = os.path.join(run_dir, CHECKPOINT) if run_dir else None
    key = _fingerprint(ids, cfg, lm.config if lm is not None else (config or DEFAULT_CONFIG), seed, lm, device, extra)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    if lm is None:
        lm = TransformerLM(config or DEFAULT_CONFIG)  # built on the CPU: the same init on every device
    lm = lm.to(device)
    ck = load_checkpoint(path, key, "BC") if path and resume else None
    if ck is not None:
        lm.load_state_dict(ck["lm"])
        if ck["done"]:
            say(f"BC already finished in {run_dir} ({ck['step0']} gradient steps): returning its model")
            lm.trained_on = ck["trained_on"]
            return lm.eval(), dict(ck["stats"])
        fit = ck["fit"] or {}
        say(f"resuming BC from gradient step {ck['step0'] + fit.get('step', 0)} in {run_dir} "
            + (f"(DAgger round {ck['phase']} of {cfg.dagger_rounds}, " if ck["phase"] else "(")
            + (f"step {fit['step']} of {fit['total']})" if fit else "start of the round)"))
    writer = None
    if tensorboard_log is not None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: a resumed run drops the points its killed predecessor logged past the checkpoint.
        writer = SummaryWriter(log_dir=tensorboard_log, purge_step=_global_step(ck) or None)

    data = expert_sequences(ids, cfg.episodes, seed)
    if extra is not None:
        data = data.cat(extra)
    heldout = expert_sequences(ids, min(cfg.eval_episodes, 500), seed + seeds.HELDOUT) if cfg.eval_episodes else None
    # What the model has seen: a model fine-tuned here keeps what it saw before.
    lm.trained_on = merge_profiles([s for s in (getattr(lm, "trained_on", None), trained_on(ids)) if s])

    def heldout_eval(step: int) -> dict[str, float]:
        """Held-out token accuracy and greedy success, logged at gradient step ``step``."""
        out: dict[str, float] = {}
        out["heldout_loss"], out["token_acc"] = token_accuracy(lm, heldout)
        report = evaluate(LMAgent(lm), ids, episodes=max(1, cfg.eval_episodes // len(ids)),
                          seed=seed + seeds.HELDOUT)
        out["heldout_success"] = report.success
        if writer is not None:
            writer.add_scalar("bc/heldout_token_acc", out["token_acc"], step)
            writer.add_scalar("bc/heldout_success", out["heldout_success"], step)
            for env, value in report.success_by_env.items():
                writer.add_scalar(f"bc/heldout_success/{short_name(env)}", value, step)
        return out

    # Progress so far: phase 0 is the first fit, phase r the DAgger round r (its rollouts, then a fit).
    phase, steps, extras, rollout_success, fit_state, loss = 0, 0, [], [], None, float("nan")
    if ck is not None:
        phase, steps, fit_state, loss = ck["phase"], ck["step0"], ck["fit"], ck["loss"]
        extras = [Sequences(e["inputs"], e["targets"]) for e in ck["dagger"]]
        rollout_success = list(ck["dagger_success"])
        for extra in extras:
            data = data.cat(extra)
    saved = {"step": _global_step(ck)}

    def save(fit: dict[str, Any] | None, done: bool = False, stats: dict[str, float] | None = None) -> None:
        if path is None:
            return
        state = {"fingerprint": key, "phase": phase, "step0": steps, "fit": fit, "loss": loss, "lm": lm.state_dict(),
                 "dagger": [{"inputs": e.inputs, "targets": e.targets} for e in extras],
                 "dagger_success": rollout_success, "done": done, "stats": stats, "trained_on": lm.trained_on}
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        saved["step"] = steps + (fit["step"] if fit else 0)

    # Curves during training only when someone reads them (a writer); the final point always.
    on_eval = heldout_eval if heldout is not None and writer is not None else None
    guard = Interrupts()
    try:
        with guard:
            while phase <= cfg.dagger_rounds:
                if phase > len(extras):  # this DAgger round's rollouts (not yet in a checkpoint)
                    n = cfg.dagger_episodes or max(1, cfg.episodes // 2)
                    r = phase - 1
                    extra, success = dagger_sequences(lm, ids, n, seed + seeds.DAGGER + r * n)
                    extras.append(extra)
                    rollout_success.append(success)
                    data = data.cat(extra)
                    if writer is not None:
                        writer.add_scalar("bc/dagger_rollout_success", success, steps)
                        writer.add_scalar("bc/dagger_dataset", len(data), steps)
                    save(None)
                desc = "BC" if phase == 0 else f"DAgger {phase}/{cfg.dagger_rounds}"
                more, loss = _fit(lm, data, cfg, generator=gen, writer=writer, step0=steps, desc=desc,
                                  progress=progress, on_eval=on_eval, guard=guard, resume=fit_state,
                                  save=save if path else None)
                steps += more
                phase, fit_state = phase + 1, None
                save(None)
    except KeyboardInterrupt:
        if writer is not None:
            writer.close()
        where = f"gradient step {saved['step']} in {run_dir}" if path and os.path.isfile(path) else None
        say(f"BC interrupted ({guard.name}): " + (f"checkpoint at {where}; the same call resumes from it" if where
                                                 else "nothing saved (no run_dir)"))
        raise
    stats: dict[str, float] = {"loss": loss}
    for r, success in enumerate(rollout_success):
        stats[f"dagger_{r + 1}_rollout_success"] = success
    stats["train_tokens"] = float((data.targets != IGNORE).sum())
    stats["steps"] = float(steps)
    if heldout is not None:
        stats.update(heldout_eval(steps))
    stats["seconds"] = time.perf_counter() - start
    if writer is not None:
        writer.close()
    save(None, done=True, stats=stats)
    return lm, stats


#: The checkpoint :func:`behavior_cloning` keeps in its ``run_dir``.
CHECKPOINT = "bc_checkpoint.pt"


def _global_step(ck: dict[str, Any] | None) -> int:
    if ck is None:
        return 0
    return int(ck["step0"]) + int((ck["fit"] or {}).get("step", 0))


__all__ = ["BCConfig", "BC_PRESETS", "CHECKPOINT", "DEFAULT_CONFIG", "Sequences", "behavior_cloning", "dagger_sequences", "expert_sequences", "token_accuracy"]
