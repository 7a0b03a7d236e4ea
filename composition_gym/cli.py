"""The ``compgym`` command line, derived from the settings dataclasses.

Each command is a config dataclass (its fields are the options: name, type, default, and help from
the docstring under the field) and a function that runs it (:data:`COMMANDS`); tyro builds the
parser, so a new field is a new option with no other edit.  Commands are named by
``"module:attribute"`` strings, imported only when that command runs (the core commands ``list``,
``show`` and ``play`` live in :mod:`composition_gym.commands`), so ``compgym list`` never loads
torch or SB3.

Every user error (a bad id, number, file or setting) prints one line, ``compgym <command>:
<problem>``, and exits with status 2; ``--debug`` (or ``COMPGYM_DEBUG=1``) shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import tyro



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
    "list": Command("composition_gym.commands:ListConfig", "composition_gym.commands:run_list",
                    "list the registered environment ids"),
    "show": Command("composition_gym.commands:ShowConfig", "composition_gym.commands:run_show",
                    "print episodes: prompt, hidden cascade, reference trace"),
    "play": Command("composition_gym.commands:ShowConfig", "composition_gym.commands:run_play",
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
    "bench": Command("composition_gym.benchmarks.throughput:BenchConfig", "composition_gym.benchmarks.throughput:run_bench",
                     "throughput as ratios: env vs CartPole, vector env, PPO and BC, GRPO vs its model's limit, memory"),
    "reproduce": Command("composition_gym.benchmarks.experiment.reproduce:ReproduceConfig",
                         "composition_gym.benchmarks.experiment.reproduce:run",
                         "reproduce the paper's claims: SFT then RL arms, several seeds, paired verdicts; resumable"),
    "sweep": Command("composition_gym.benchmarks.experiment.sweep:SweepConfig",
                     "composition_gym.benchmarks.experiment.sweep:run",
                     "every cell of a grid over the protocol's knobs: headroom and each arm's gain; resumable"),
}

#: Exceptions that mean "the user asked for something impossible": one line, exit status 2.
USER_ERRORS = (gym.error.Error, ValueError, TypeError, LookupError, OSError)


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


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``compgym`` parser: the commands with their one-line help (each command's own
    options are its settings class's, parsed by :func:`parse_config`)."""
    parser = Parser(prog="compgym", description="composition-gym: environments, agents and benchmarks. "
                                                 "Errors print one line; --debug shows the traceback.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also: COMPGYM_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, cmd in COMMANDS.items():
        subparsers.add_parser(name, help=cmd.help, add_help=False)  # its options: `compgym NAME --help`
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
    try:  # --help, no command, an unknown one, or options before the command
        build_parser().parse_args(argv)
    except SystemExit as exit_:  # the help, or a usage error already printed on one line
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    print("compgym: error: the options come after the command: compgym COMMAND [OPTIONS]", file=sys.stderr)
    return 2


def parse(argv: Sequence[str]) -> Any:
    """The settings of a ``compgym`` command line, without running it.

    Raises:
        UsageError: the arguments do not parse (one line).
        SystemExit: ``--help``, or no known command (the message already printed).
    """
    argv = [a for a in argv if a != "--debug"]
    command = _command_of(argv)
    if command in COMMANDS and argv and argv[0] == command:
        return parse_config(_load(COMMANDS[command].config), argv[1:], f"compgym {command}")
    build_parser().parse_args(argv)
    raise UsageError("the options come after the command: compgym COMMAND [OPTIONS]")


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
