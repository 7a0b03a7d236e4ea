"""Every numeric option of every command, given 0, -1 and a word: parsed, or refused in one line.

The options are derived from the settings dataclasses, so this walks the dataclasses: each int or
float field (nested settings too, as ``--grpo.lr``), and checks that a value its bounds exclude is
refused with a one-line usage error, a value they admit parses, and a word is refused.  Nothing
runs: parsing alone.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from composition_gym import cli

#: Positional arguments a command needs before its options.
POSITIONAL = {"show": ["Compose-L3"], "play": ["Compose-L3"]}
#: Options a setting only applies with (exposure: families that hold pairs out).
CONTEXT = {("reproduce", "--exposure"): ["--family", "routing_skill"]}


def _numeric(hint) -> type | None:
    """``int`` or ``float`` if ``hint`` is one (or ``X | None``, or a tuple of one), else ``None``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        found = [_numeric(a) for a in args if a is not type(None)]
        return found[0] if len(found) == 1 else None
    if origin is tuple and args and args[-1] is Ellipsis:
        return _numeric(args[0])
    return hint if hint in (int, float) else None


def _options(cls, prefix: str = ""):
    """``(flag, kind, bounds)`` of every numeric field of the dataclass ``cls``, nested ones included."""
    hints = typing.get_type_hints(cls, include_extras=False)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _options(hint, f"{prefix}{f.name}.")
            continue
        kind = _numeric(hint)
        if kind is not None:
            yield f"--{prefix}{f.name}".replace("_", "-"), kind, f.metadata.get("bounds", {})


def _admits(bounds: dict, value: float) -> bool:
    return (value >= bounds.get("ge", -float("inf")) and value > bounds.get("gt", -float("inf"))
            and value <= bounds.get("le", float("inf")))


CASES = [(name, flag, kind, bounds) for name, command in cli.COMMANDS.items()
         for flag, kind, bounds in _options(cli._load(command.config))]


def test_every_command_has_numeric_options_walked():
    assert {name for name, *_ in CASES} >= {"show", "train", "eval", "demo", "diagnose", "reproduce", "sweep"}
    assert len(CASES) > 80


@pytest.mark.parametrize("name,flag,kind,bounds", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_zero_minus_one_and_a_word(name, flag, kind, bounds):
    argv = [name, *POSITIONAL.get(name, []), *CONTEXT.get((name, flag), [])]
    for text in ("0", "-1", "abc"):
        admitted = text != "abc" and _admits(bounds, float(text))
        try:
            cli.parse([*argv, flag, text])
        except cli.UsageError as err:
            assert not admitted, f"{name} {flag} {text}: refused although its bounds admit it: {err}"
            assert "\n" not in str(err) and str(err)
        except ValueError as err:  # a value a preset or a cross-field rule refuses: one line too
            assert "\n" not in str(err)
        else:
            assert admitted, f"{name} {flag} {text} was accepted"
