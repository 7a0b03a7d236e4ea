"""The ``compgym`` command line, derived from the settings dataclasses.

Each command is a config dataclass (its fields are the options: name, type, default, and help from
the docstring under the field) and a function that runs it (:data:`COMMANDS`); tyro builds the
parser, so a new field is a new option with no other edit.  The core commands live here
(``list``, ``show``, ``play``); the layers further down the data flow name theirs by
``"module:attribute"`` strings, imported only when that command runs, so ``compgym list`` never
loads torch or SB3.  (A few commands still add argparse parsers through :data:`LAZY_COMMANDS`.)

Every user error (a bad id, number, file or setting) prints one line, ``compgym <command>:
<problem>``, and exits with status 2; ``--debug`` (or ``COMPGYM_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import tyro

from composition_gym import tokens as T
from composition_gym.cascade import PROMPT_FORMATS, TRACE_FORMATS
from composition_gym.config import Config, bounded
from composition_gym.profiles import PROFILES
from composition_gym.registration import list_envs, resolve_env_id


@dataclass(frozen=True)
class Command:
    """A ``compgym`` command: its settings class, the function that runs them, its one-line help.

    ``config`` and ``run`` are ``"module:attribute"`` strings, imported only when the command runs.
    ``run(config) -> int`` returns the exit status.  A settings class may name ``PRESET_FIELDS``
    (options that choose a starting point, e.g. ``--budget tiny``) and a ``from_presets(**chosen)``
    classmethod giving the defaults every other option then overrides.
    """

    config: str
    run: str
    help: str


#: Every tyro-derived command (see :class:`Command`).
COMMANDS: dict[str, Command] = {
    "list": Command("composition_gym.cli:ListConfig", "composition_gym.cli:run_list",
                    "list the registered environment ids"),
    "show": Command("composition_gym.cli:ShowConfig", "composition_gym.cli:run_show",
                    "print episodes: prompt, hidden cascade, reference trace"),
    "play": Command("composition_gym.cli:ShowConfig", "composition_gym.cli:run_play",
                    "type a trace yourself and see the reward"),
    "train": Command("composition_gym.agents.cli:TrainConfig", "composition_gym.agents.cli:run_train",
                     "behavior cloning, then SB3 PPO/MaskablePPO (saves a .zip) or group-relative RL (saves a .pt)"),
    "eval": Command("composition_gym.agents.cli:EvalConfig", "composition_gym.agents.cli:run_eval",
                    "evaluate a saved model on an ID / OOD suite"),
    "demo": Command("composition_gym.agents.cli:DemoConfig", "composition_gym.agents.cli:run_demo",
                    "BC -> MaskablePPO on the small profile, ID/OOD table (time: docs/results/demo.md)"),
    "diagnose": Command("composition_gym.agents.diagnostics.cli:DiagnoseCommand",
                        "composition_gym.agents.diagnostics.cli:run_diagnose",
                        "why a model fails: error anatomy, linear probes, attention to the call"),
    "reproduce": Command("composition_gym.benchmarks.experiment.reproduce:ReproduceConfig",
                         "composition_gym.benchmarks.experiment.reproduce:run",
                         "reproduce the paper's claims: SFT then RL arms, several seeds, paired verdicts; resumable"),
    "sweep": Command("composition_gym.benchmarks.experiment.sweep:SweepConfig",
                     "composition_gym.benchmarks.experiment.sweep:run",
                     "every cell of a grid over the protocol's knobs: headroom and each arm's gain; resumable"),
}

#: The subcommands of the other layers: name -> ("module:function", help).  ``function(subparsers)``
#: adds that command's parser (a module's function may add several of the names at once).  Kept
#: as strings so that building the parser imports nothing heavy; a module that is not installed
#: is skipped.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("composition_gym.benchmarks.cli:register",
              "throughput: env vs CartPole, vector env, PPO and BC, peak memory"),
}

#: Exceptions that mean "the user asked for something impossible": one line, exit status 2.
USER_ERRORS = (gym.error.Error, ValueError, TypeError, LookupError, OSError)


# ---------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _number(text, int, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _number(text, int, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = _number(text, float, None)
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _number(text: str, kind: type, minimum: int | None) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``compgym eval: error: ...``), status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------------- tables
def render_table(table: Any, width: int = 160) -> str:
    """A ``rich`` table as plain text (no colour codes), ``width`` columns at most."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, soft_wrap=False)
    console.print(table)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]
    return "\n".join(lines).strip("\n")


@dataclass(frozen=True)
class ListConfig(Config):
    """List the registered environment ids with their profile, split, depth, role and purpose."""

    profile: Literal[tuple(PROFILES)] | None = None
    """Only this profile's ids (default: every profile)."""


def run_list(cfg: ListConfig) -> int:
    """``compgym list``: the ids as a table."""
    from rich import box
    from rich.table import Table

    rows = [r for r in list_envs() if not cfg.profile or r["profile"] == cfg.profile]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "profile", "split", "L", "role", "purpose"):
        table.add_column(name, no_wrap=name != "purpose")
    for r in rows:
        table.add_row(r["id"], r["profile"], r["split"], str(r["depth"]), r["role"], r["purpose"])
    print(render_table(table))
    return 0


# ---------------------------------------------------------------------------- show / play
@dataclass(frozen=True)
class ShowConfig(Config):
    """Episodes of one environment: show them (prompt, hidden cascade, reference trace) or play them."""

    env_id: tyro.conf.Positional[str]
    """An id such as Compose-L3-v1 (namespace and version optional: the newest version)."""
    seed: int = 0
    """Episode k resets with seed + k."""
    episodes: int = bounded(1, ge=1)
    """How many episodes."""
    trace_format: Literal[TRACE_FORMATS] = "values"
    """values: intermediates then the answer; tagged: each step tagged with its modules; answer: the answer only."""
    prompt_format: Literal[PROMPT_FORMATS] = "nested"
    """How the prompt writes the program: nested calls, or the steps listed (pipeline, reversed)."""


def _make(cfg: ShowConfig) -> gym.Env:
    return gym.make(resolve_env_id(cfg.env_id), trace_format=cfg.trace_format, prompt_format=cfg.prompt_format)


def run_show(cfg: ShowConfig) -> int:
    """``compgym show``: print episodes."""
    env = _make(cfg)
    for k in range(cfg.episodes):
        _, info = env.reset(seed=cfg.seed + k)
        problem = env.unwrapped.problem
        print(f"== {resolve_env_id(cfg.env_id)}  seed={cfg.seed + k}")
        print(f"prompt : {info['prompt']}")
        print("cascade: " + "  ".join(f"{t + 1}:{r}·{s}" for t, (r, s) in enumerate(problem.cascade.steps)))
        for t, z in enumerate(problem.values):
            print(f"  z{t + 1} = {z}")
        print(f"trace  : {_reference(env)}")
        print(f"answer : {problem.answer}")
    return 0


def _reference(env: gym.Env) -> str:
    """The reference trace of the current episode as text (``cf;cdff;dfffdc<eos>``)."""
    return T.decode(T.TOKEN_ID[t] for t in env.unwrapped.problem.trace(env.unwrapped.trace_format))


def run_play(cfg: ShowConfig) -> int:
    """``compgym play``: type a trace, see the reward and the per-step diagnosis."""
    env = _make(cfg)
    fmt = env.unwrapped.trace_format
    hint = {"values": "z1;z2;...;answer", "tagged": "Chain Rev:z1;...", "answer": "the answer"}[fmt]
    print(f"type the trace ({hint}) and press Enter; <eos> is added for you. Quit: Ctrl-D or Ctrl-C.")
    try:
        for k in range(cfg.episodes):
            _, info = env.reset(seed=cfg.seed + k)
            print(f"\n{info['prompt']}")
            line = sys.stdin.readline()
            if not line:
                return 0
            _play_one(env, line.strip(), info)
    except KeyboardInterrupt:
        print()  # end the prompt's line; no traceback for the way out we announced
        return 130
    return 0


def _play_one(env: gym.Env, text: str, info: dict[str, Any]) -> None:
    """Step the typed trace token by token; report the reward, or the first token the grammar rejects."""
    try:
        ids = T.encode(text)
    except ValueError as err:
        print(f"cannot read that: {err}")
        return
    if not ids or ids[-1] != T.EOS_ID:
        ids.append(T.EOS_ID)
    total = 0.0
    for pos, tok in enumerate(ids):
        mask = info["action_mask"]
        if not mask[tok]:
            _explain_rejection(env, ids[:pos], tok, pos, mask)
            return
        _, reward, term, trunc, info = env.step(tok)
        total += reward
        if term or trunc:
            break
    else:
        print("the trace did not end the episode")
        return
    verdict = "correct" if info["is_success"] else ("malformed" if info["malformed"] else "wrong")
    print(f"reward {total:g} ({verdict}); expected answer {info['answer']}")
    for d in info["diagnosis"]:
        mark = "ok " if d["correct"] else "XX "
        print(f"  {mark} step {d['step']} {d['routing']}·{d['skill']}: expected {d['expected']}, got {d['generated']}")


def _explain_rejection(env: gym.Env, accepted: list[int], tok: int, pos: int, mask: np.ndarray) -> None:
    """Which token was refused and where, what was allowed, and how the accepted prefix compares."""
    typed = T.decode(accepted)
    allowed = " ".join(T.decode([i]) for i in np.flatnonzero(mask))
    print(f"rejected: token {T.decode([tok])!r} at position {pos + 1} of your trace (after {typed!r}); "
          f"the grammar allows here: {allowed}")
    reference = _reference(env)
    same = 0
    while same < min(len(typed), len(reference)) and typed[same] == reference[same]:
        same += 1
    if same == len(typed):
        print(f"your prefix {typed!r} is correct so far; the reference trace is {reference}")
    else:
        print(f"your prefix departs from the reference at character {same + 1}: {typed[:same]!r} then "
              f"{typed[same:]!r} instead of {reference[same:]!r}")
    problem = env.unwrapped.problem
    if env.unwrapped.trace_format == "values" and typed:
        for t, seg in enumerate(typed.split(";")):
            if t >= len(problem.values):
                break
            r, s = problem.cascade.steps[t]
            expected = problem.values[t]
            done = t < typed.count(";")
            if not done and not seg:
                break
            ok = seg == expected if done else expected.startswith(seg)
            state = "" if done else " (unfinished)"
            print(f"  {'ok ' if ok else 'XX '} step {t + 1} {r}·{s}: expected {expected}, got {seg}{state}")


# ---------------------------------------------------------------------------- parsing
class UsageError(ValueError):
    """A command line that does not parse (one line, exit status 2)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RULE = set("─━-=+╭╮╰╯┌┐└┘│|' ")


def _one_line_usage(text: str) -> str:
    """tyro's boxed error message as one line: the message and a suggestion, without the box's title
    and the help it repeats (rich draws the box in Unicode or ASCII depending on the terminal)."""
    lines = []
    for raw in _ANSI.sub("", text).splitlines()[1:]:  # the first line is the box's top and title
        line = raw.strip()
        line = line[1:] if line[:1] in "│|" else line
        line = line[:-1] if line[-1:] in "│|" else line
        line = line.strip()
        if line and not set(line) <= _RULE:
            lines.append(line)
    kept: list[str] = []
    for line in lines:
        if line.startswith(("Argument helptext", "For full helptext")):
            break
        kept.append(line)
        if len(kept) >= 2 and kept[-2].startswith(("Perhaps you meant", "Arguments similar to")):
            break  # the first suggestion; the rest repeats the help
    message = " ".join(" ".join(kept).split()) or "invalid arguments"
    # "Error parsing ReproduceConfig: …" names a class, not an option: keep only the reason.
    return re.sub(r"^Error parsing [A-Z]\w*: ", "", message)


def parse_config(cls: type, argv: Sequence[str], prog: str) -> Any:
    """``cls`` from the options ``argv`` (tyro), starting from the presets ``argv`` names, if any.

    Raises:
        UsageError: the arguments do not parse (the message is one line).
        SystemExit: ``--help`` (the help went to stdout).
    """
    argv = list(argv)
    default = None
    presets = getattr(cls, "PRESET_FIELDS", ())
    if presets:
        pre = argparse.ArgumentParser(add_help=False)
        hints = typing.get_type_hints(cls)
        for name in presets:
            flag = f"--{name.replace('_', '-')}"
            if hints.get(name) is bool:
                pre.add_argument(flag, dest=name, action="store_true", default=None)
            else:
                pre.add_argument(flag, dest=name)
        known, _ = pre.parse_known_args(argv)
        default = cls.from_presets(**{n: getattr(known, n) for n in presets if getattr(known, n) is not None})
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, args=argv, prog=prog, default=default, description=_description(cls))
    except SystemExit as exit_:
        if not exit_.code:
            raise
        raise UsageError(_one_line_usage(captured.getvalue())) from None


def _description(cls: type) -> str | None:
    doc = (cls.__doc__ or "").strip()
    return doc.split("\n\n")[0] if doc else None


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _available(module: str) -> bool:
    """Whether ``module`` is installed, found without importing its packages (which load torch)."""
    package, _, rest = module.partition(".")  # "composition_gym", "agents.diagnostics.cli"
    head, _, tail = rest.partition(".")
    try:
        spec = importlib.util.find_spec(f"{package}.{head}")  # imports only `package`
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not tail:
        return True
    locations = list(spec.submodule_search_locations or [])
    rel = tail.replace(".", os.sep)
    return any(os.path.isfile(os.path.join(d, rel + ".py")) or os.path.isfile(os.path.join(d, rel, "__init__.py"))
               for d in locations)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``compgym`` parser.

    Every layer's commands are listed; only ``command``'s layer (if it is a lazy one) is imported
    to add its options, so ``compgym list`` and ``compgym --help`` stay fast.
    """
    parser = Parser(prog="compgym", description="composition-gym: environments, agents and benchmarks. "
                                                 "Errors print one line; --debug shows the traceback.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also: COMPGYM_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, cmd in COMMANDS.items():
        subparsers.add_parser(name, help=cmd.help)  # its options: `compgym NAME --help` (tyro)
    chosen = LAZY_COMMANDS.get(command or "", ("", ""))[0]
    registered: set[str] = set()
    for name, (target, text) in LAZY_COMMANDS.items():
        if not _available(target.partition(":")[0]):
            continue
        if target == chosen:
            if target not in registered:
                registered.add(target)
                _load(target)(subparsers)
        else:  # a placeholder: the help line only, filled in when the command is chosen
            subparsers.add_parser(name, help=text)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _debug(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("COMPGYM_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compgym`` console script: returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug(argv)
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere, not only before the command
    command = _command_of(argv)
    if command in COMMANDS and argv and argv[0] == command:
        return _run_command(command, argv[1:], debug)
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed on one line
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    return _guarded(args.command, lambda: args.func(args), debug)


def parse(argv: Sequence[str]) -> Any:
    """The parsed settings of a ``compgym`` command line without running it: the command's config
    (tyro-derived commands) or an ``argparse.Namespace``.

    Raises:
        UsageError: a tyro-derived command's arguments do not parse (one line).
        SystemExit: an argparse command's do (the message already printed), or ``--help``.
    """
    argv = [a for a in argv if a != "--debug"]
    command = _command_of(argv)
    if command in COMMANDS and argv and argv[0] == command:
        return parse_config(_load(COMMANDS[command].config), argv[1:], f"compgym {command}")
    return build_parser(command).parse_args(argv)


def _run_command(command: str, argv: list[str], debug: bool) -> int:
    """Parse ``argv`` into the command's settings and run them."""
    cmd = COMMANDS[command]
    prog = f"compgym {command}"
    try:
        config = parse_config(_load(cmd.config), argv, prog)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    except BrokenPipeError:  # `compgym sweep --help | head`: the reader left
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
        return 0
    except UsageError as err:
        if debug:
            raise
        print(f"{prog}: error: {err} (see {prog} --help)", file=sys.stderr)
        return 2
    except USER_ERRORS as err:  # a preset that does not exist
        if debug:
            raise
        print(f"{prog}: {_one_line(err)}", file=sys.stderr)
        return 2
    return _guarded(command, lambda: _load(cmd.run)(config), debug)


def _guarded(command: str, run: Any, debug: bool) -> int:
    """Run a command's handler; a user error becomes one line and status 2, Ctrl-C status 130."""
    try:
        return int(run() or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"compgym {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `compgym list | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout again at exit
        return 0
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into one line
        if debug:
            raise
        print(f"compgym {command}: {_one_line(err)}", file=sys.stderr)
        return 2


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, USER_ERRORS):
        if isinstance(err, KeyError):  # str(KeyError) is the quoted key alone
            text = f"unknown key {text}"
        return text
    return f"{type(err).__name__}: {text} (an internal error: rerun with --debug and report the traceback)"


if __name__ == "__main__":
    sys.exit(main())
