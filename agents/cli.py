"""``compgym train``, ``compgym eval`` and ``compgym demo``.

:func:`register` adds the subcommands to ``compgym``'s parser (``composition_gym.cli`` calls it);
each handler is ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from composition_gym.agents.bc import DEFAULT_CONFIG, behavior_cloning
from composition_gym.agents.agent import load_agent
from composition_gym.agents.evaluation import EvalReport, evaluate, paired_differences
from composition_gym.agents.ppo import ALGOS, bc_then_ppo, next_run_dir, train_ppo
from composition_gym.agents.settings import BC_PRESETS, DEMO_BUDGETS, bc_config, resolve_threads, torch_threads
from composition_gym.agents.transformer import TransformerLM
from composition_gym.cli import LAZY_COMMANDS, nonnegative_int, positive_float, positive_int, render_table
from composition_gym.registration import SUITES, env_id, resolve_env_id, short_name, suite


# ---------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    if args.algo in GROUP_ALGOS:
        return _cmd_train_grpo(args)
    if args.algo == "recurrent_ppo" and args.bc_episodes != 0:
        raise ValueError("recurrent_ppo trains its own LSTM policy from scratch: add --bc-episodes 0")
    bc = bc_config(args.bc_preset, episodes=args.bc_episodes or None, epochs=args.bc_epochs)
    env_ids = [resolve_env_id(e) for e in args.env]
    rl_ids = [resolve_env_id(e) for e in args.rl_env] if args.rl_env else env_ids
    eval_ids = {"id": suite("id", args.profile), "ood": suite("ood", args.profile)}
    common: dict[str, Any] = dict(algo=args.algo, seed=args.seed, eval_env_ids=eval_ids, eval_freq=args.eval_freq,
                                  eval_episodes=args.eval_episodes, progress=not args.no_progress,
                                  n_envs=args.n_envs, threads=resolve_threads(args.threads))
    t0 = time.perf_counter()
    if args.bc_episodes != 0:
        model, _ = bc_then_ppo(env_ids, ppo_steps=args.ppo_steps, rl_env_id=rl_ids, tensorboard_log=args.tensorboard,
                               bc_kwargs={"settings": bc}, **common)
    else:
        model = train_ppo(rl_ids, None, args.ppo_steps, tensorboard_log=args.tensorboard, **common)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    print(f"saved {type(model).__name__} to {args.out} ({time.perf_counter() - t0:.0f} s)")
    if args.tensorboard:
        print(f"curves: tensorboard --logdir {args.tensorboard}")
    return 0


GROUP_ALGOS = ("grpo", "drgrpo", "rloo")  # the project's own trainer (agents.grpo); the rest are SB3's


def _cmd_train_grpo(args: argparse.Namespace) -> int:
    from composition_gym.agents.grpo import GRPOConfig, train_grpo
    from composition_gym.agents.ppo import next_run_dir

    rl_id = resolve_env_id((args.rl_env or args.env)[0])
    if args.init:
        lm = load_agent(args.init)
        if not isinstance(lm, TransformerLM):
            raise ValueError(f"--init needs a TransformerLM checkpoint (.pt) or 'pretrained', got {args.init!r}")
    else:
        bc = bc_config(args.bc_preset, episodes=args.bc_episodes or None, epochs=args.bc_epochs)
        lm, _ = behavior_cloning([resolve_env_id(e) for e in args.env], settings=bc, seed=args.seed,
                                 progress=not args.no_progress, threads=args.threads)
    cfg = GRPOConfig(iterations=args.iterations, problems_per_iter=args.problems, group_size=args.group_size,
                     temperature=args.temperature, lr=args.lr, advantage=args.algo, kl_coef=args.kl_coef,
                     epochs=args.epochs, minibatch_size=args.minibatch_size)
    run_dir = args.run_dir or next_run_dir(args.tensorboard, args.algo.upper())
    eval_ids = {"id": suite("id", args.profile, args.version), "ood": suite("ood", args.profile, args.version)}
    t0 = time.perf_counter()
    with torch_threads(args.threads):
        lm, stats = train_grpo(rl_id, lm, cfg, seed=args.seed, run_dir=run_dir,
                               eval_env_ids=eval_ids if args.eval_every > 0 else None,
                               eval_every=max(args.eval_every, 1), eval_episodes=args.eval_episodes,
                               progress=not args.no_progress, device=args.device,
                               time_limit_s=None if args.max_minutes is None else 60 * args.max_minutes)
    out = args.out if args.out.endswith(".pt") else os.path.splitext(args.out)[0] + ".pt"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    lm.save(out)
    print(f"saved TransformerLM to {out} ({time.perf_counter() - t0:.0f} s); curves: tensorboard --logdir {run_dir}")
    return 0


# ---------------------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from composition_gym.agents.settings import torch_threads

    agent = load_agent(args.model)
    env_ids = [resolve_env_id(e) for e in args.env] if args.env else suite(args.suite, args.profile)
    if args.samples and not isinstance(agent, TransformerLM):
        raise ValueError("--samples needs a TransformerLM checkpoint (.pt or 'pretrained')")
    if isinstance(agent, TransformerLM):
        agent = agent.to(args.device)
    with torch_threads(args.threads):
        report = evaluate(agent, env_ids, args.episodes, seed=args.seed, samples=args.samples,
                          temperature=args.temperature)
    print(report.table(f"{args.model}: {args.episodes} episodes per env, seed {args.seed}"))
    doc = report.to_dict()
    if args.baseline:
        base = load_agent(args.baseline)
        if args.samples and not isinstance(base, TransformerLM):
            raise ValueError("--samples with --baseline needs a TransformerLM baseline (.pt or 'pretrained')")
        with torch_threads(args.threads):
            before = evaluate(base.to(args.device) if isinstance(base, TransformerLM) else base, env_ids,
                              args.episodes, seed=args.seed, samples=args.samples, temperature=args.temperature)
        doc["paired_vs_baseline"] = diffs = paired_differences(before, report)
        print(f"\n{args.model} - {args.baseline}, paired over the same problems (points, ± standard error):")
        for env, row in diffs.items():
            cells = "  ".join(f"{m} {100 * v['before']:.1f} -> {100 * v['after']:.1f} "
                              f"({100 * v['diff']:+.1f} ± {100 * v['se']:.1f})" for m, v in row.items())
            print(f"  {short_name(env)}: {cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"wrote {args.json}")
    return 0


# ---------------------------------------------------------------------------- demo
def comparison_table(reports: dict[str, EvalReport], groups: dict[str, list[str]]) -> str:
    """Success per env id (rows, grouped as ID / OOD) for several agents (columns), then per depth."""
    from rich import box
    from rich.table import Table

    names = list(reports)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("")
    table.add_column("env id")
    for n in names:
        table.add_column(n, justify="right")
    for group, ids in groups.items():
        for e in ids:
            table.add_row(group, short_name(e), *(f"{reports[n].success_by_env[e]:.1%}" for n in names))
    table.add_section()
    depths = sorted({d for r in reports.values() for d in r.by_depth}, key=int)
    for d in depths:
        table.add_row("depth", f"L={d}", *(f"{reports[n].by_depth.get(d, float('nan')):.1%}" for n in names))
    return render_table(table)


def _cmd_demo(args: argparse.Namespace) -> int:
    threads = resolve_threads(args.threads)
    budget = DEMO_BUDGETS["quick" if args.quick else "full"]
    budget = budget.replace(bc=budget.bc.replace(episodes=args.bc_episodes),
                            **{k: v for k, v in (("ppo_steps", args.ppo_steps), ("eval_episodes", args.eval_episodes))
                               if v is not None})
    sft = env_id("Compose-L3")
    rl = env_id("Compose-RL-L3")
    groups = {"ID": suite("id"), "OOD": suite("ood")}
    run_dir = next_run_dir(args.tensorboard, "demo")
    print(f"compgym demo: behavior cloning on {sft} ({budget.bc.episodes} expert episodes), then "
          f"{args.algo} on {rl} ({budget.ppo_steps} steps); {threads} torch threads")
    t0 = time.perf_counter()
    lm, stats = behavior_cloning(sft, settings=budget.bc, config=DEFAULT_CONFIG, seed=args.seed,
                                 tensorboard_log=run_dir, progress=not args.no_progress, threads=threads)
    t_bc = time.perf_counter() - t0
    print(f"BC: {t_bc:.0f} s, held-out token accuracy {stats['token_acc']:.1%}, "
          f"greedy success {stats['heldout_success']:.1%}")
    model = train_ppo(rl, lm, budget.ppo_steps, algo=args.algo, seed=args.seed, run_dir=run_dir,
                      eval_env_ids={"id": groups["ID"], "ood": groups["OOD"]},
                      eval_freq=max(budget.ppo_steps // 3, 1), eval_episodes=max(budget.eval_episodes // 4, 1),
                      progress=not args.no_progress, threads=threads)
    t_ppo = time.perf_counter() - t0 - t_bc
    all_ids = groups["ID"] + groups["OOD"]
    reports = {}
    for name, agent in (("BC", lm), ("BC+PPO", model)):
        t = time.perf_counter()
        print(f"evaluating {name}: {len(all_ids)} env ids x {budget.eval_episodes} episodes ...", end=" ", flush=True)
        reports[name] = evaluate(agent, all_ids, budget.eval_episodes, seed=10_000 + args.seed)
        print(f"{time.perf_counter() - t:.0f} s", flush=True)
    model_path = os.path.join(run_dir, "model.zip")
    model.save(model_path)
    lm.save(os.path.join(run_dir, "bc_lm.pt"))
    total = time.perf_counter() - t0
    print()
    print(comparison_table(reports, groups))
    print(f"\n{budget.eval_episodes} episodes per env id (seeds {10_000 + args.seed}+i); "
          f"BC {t_bc:.0f} s, PPO {t_ppo:.0f} s, total {total:.0f} s")
    final = reports["BC+PPO"]
    print("BC+PPO over all four ids (L=3 and L=4 episodes together):")
    for name, values in (("skill", final.by_skill), ("routing", final.by_routing)):
        print(f"  by {name:<8}" + "  ".join(f"{k}={v:.0%}" for k, v in values.items()))
    summary = os.path.join(run_dir, "demo.json")
    with open(summary, "w") as f:
        json.dump({"budget": budget.to_dict(), "bc_stats": stats,
                   "seconds": {"bc": t_bc, "ppo": t_ppo, "total": total},
                   "reports": {k: {kk: vv for kk, vv in r.to_dict().items() if kk != "episodes"}
                               for k, r in reports.items()}}, f, indent=1)
    print(f"saved {model_path} and {summary}; evaluate again with: compgym eval {model_path} --suite all")
    print(f"TensorBoard: tensorboard --logdir {args.tensorboard}")
    return 0


# ---------------------------------------------------------------------------- parser
def register(subparsers) -> None:
    """Add ``train``, ``eval`` and ``demo`` to ``compgym``'s subparsers."""
    p = subparsers.add_parser("train", help=LAZY_COMMANDS["train"][1])
    p.add_argument("--env", nargs="+", default=["Compose-L3-v0"], help="env id(s) for BC (and PPO)")
    p.add_argument("--rl-env", nargs="+", help="env id(s) for the PPO phase (default: --env)")
    p.add_argument("--bc-preset", choices=sorted(BC_PRESETS), default="demo",
                   help="BC budget preset (composition_gym.agents.settings.BC_PRESETS; default: demo)")
    p.add_argument("--bc-episodes", type=nonnegative_int,
                   help="expert episodes for BC, overriding the preset (0: PPO from scratch)")
    p.add_argument("--bc-epochs", type=positive_float, help="passes over the BC data, overriding the preset")
    p.add_argument("--ppo-steps", type=positive_int, default=20_000)
    p.add_argument("--algo", choices=ALGOS + GROUP_ALGOS, default="maskable_ppo",
                   help="SB3 baselines, or group-relative RL (grpo, drgrpo, rloo: agents.grpo)")
    p.add_argument("--n-envs", type=positive_int, default=8)
    g = p.add_argument_group("group-relative RL (--algo grpo|drgrpo|rloo)")
    g.add_argument("--init", help="start from 'pretrained' or a TransformerLM .pt (default: BC from --env)")
    g.add_argument("--iterations", type=int, default=30)
    g.add_argument("--problems", type=int, default=256, help="problems per iteration (B)")
    g.add_argument("--group-size", type=int, default=8, help="samples per problem (G)")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--lr", type=float, default=2e-4)
    g.add_argument("--kl-coef", type=float, default=0.0)
    g.add_argument("--epochs", type=int, default=1, help="passes over each iteration's samples")
    g.add_argument("--minibatch-size", type=int, default=2048, help="completions per optimizer step")
    g.add_argument("--eval-every", type=int, default=10, help="iterations between ID/OOD evaluations (0: none)")
    g.add_argument("--run-dir", help="TensorBoard + checkpoint directory (default: next --tensorboard/ALGO_k); "
                                     "an existing one resumes")
    g.add_argument("--version", default="v1", help="env version of the ID/OOD eval suites")
    g.add_argument("--device", default="cpu", help="cpu or cuda")
    g.add_argument("--max-minutes", type=float, help="stop after the iteration that passes this wall-clock budget")
    p.add_argument("--tensorboard", default="runs", help="TensorBoard root directory")
    p.add_argument("--out", default="model.zip")
    p.add_argument("--eval-freq", type=positive_int, default=5_000)
    p.add_argument("--eval-episodes", type=positive_int, default=50)
    _common(p)
    p.set_defaults(func=_cmd_train)

    p = subparsers.add_parser("eval", help=LAZY_COMMANDS["eval"][1])
    p.add_argument("model", help="an SB3 .zip, a TransformerLM checkpoint (.pt), or pretrained[:NAME]")
    p.add_argument("--suite", choices=SUITES, default="all")
    # Not nargs="+": that would swallow the model path in `compgym eval --env ID model.zip`.
    p.add_argument("--env", action="extend", type=lambda text: [e for e in text.split(",") if e],
                   help="explicit env id(s) instead of a suite: --env A --env B or --env A,B")
    p.add_argument("--episodes", type=positive_int, default=100)
    p.add_argument("--json", help="also write the report as JSON here")
    p.add_argument("--samples", type=int, default=0, help="also sample K completions per problem: pass@K, headroom")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --samples)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (TransformerLM checkpoints)")
    p.add_argument("--baseline", metavar="MODEL", help="also evaluate MODEL on the same problems and print the "
                   "paired differences (model - baseline) with their standard errors")
    _common(p)
    p.set_defaults(func=_cmd_eval)

    p = subparsers.add_parser("demo", help=LAZY_COMMANDS["demo"][1])
    p.add_argument("--algo", choices=("ppo", "maskable_ppo"), default="maskable_ppo")
    p.add_argument("--tensorboard", default="runs", help="TensorBoard root directory")
    p.add_argument("--quick", action="store_true", help="a tiny budget, to check the pipeline in seconds")
    p.add_argument("--bc-episodes", type=positive_int)
    p.add_argument("--ppo-steps", type=positive_int)
    p.add_argument("--eval-episodes", type=positive_int)
    _common(p, profile=False)
    p.set_defaults(func=_cmd_demo)


def _common(p: argparse.ArgumentParser, profile: bool = True) -> None:
    p.add_argument("--seed", type=int, default=0)
    if profile:
        p.add_argument("--profile", choices=("small", "paper"), default="small", help="the suite's profile")
    p.add_argument("--threads", type=positive_int,
                   help="torch threads (default: 2 if two cores are idle, else 1; env COMPGYM_THREADS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


__all__ = ["comparison_table", "register"]
