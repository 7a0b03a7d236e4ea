"""Settings as dataclasses: each setting declared, defaulted, documented and checked once.

Every run setting of the project is a field of a frozen dataclass that derives from
:class:`Config` (``BCConfig``, ``GRPOConfig``, ``PPOConfig``, the reproduction's ``Cell`` …):

* the type hint says what the field accepts (``Literal[...]`` for a choice, ``int | None`` …);
* the default is the field's only default;
* the docstring under the field is its help text (the ``compgym`` command line is derived from
  these dataclasses with tyro, so a new field appears in ``--help`` with no other edit);
* bounds are field metadata (:func:`bounded`), checked with the types by :func:`check` when an
  instance is made, so a bad value is refused with one line naming the field, wherever it came from.

The module imports nothing heavy: the command line builds its parsers from these classes before
any torch import.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from functools import lru_cache
from typing import Any, Literal, TypeVar, Union

C = TypeVar("C", bound="Config")


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with bounds, checked by :func:`check`: ``>= ge``, ``> gt``, ``<= le``."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le)) if v is not None}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"bounds": bounds})
    return dataclasses.field(default=default, metadata={"bounds": bounds})


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_error(hint: Any, value: Any) -> str | None:
    """Why ``value`` does not fit ``hint`` (``None`` if it does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin is Literal:
        return None if value in args else f"must be one of {list(args)}"
    if origin in (Union, types.UnionType):
        reasons = [_type_error(a, value) for a in args]
        if any(r is None for r in reasons):
            return None
        named = [a for a in args if a is not type(None)]
        if len(named) == 1 and type(None) in args:
            return f"{reasons[args.index(named[0])]} (or None)"
        return f"must be one of the types {[getattr(a, '__name__', str(a)) for a in args]}"
    if origin is tuple:
        if not isinstance(value, tuple):
            return "must be a tuple (a sequence of values, not a string)"
        elem = args[0] if args else Any
        for v in value:
            reason = _type_error(elem, v)
            if reason is not None:
                return f"has an element {v!r} that {reason}"
        return None
    if origin in (dict, typing.Mapping) or hint is dict:
        return None if isinstance(value, dict) else "must be a mapping"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be an integer"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be a string"
    if isinstance(hint, type):
        return None if isinstance(value, hint) else f"must be a {hint.__name__}"
    return None


def _bound_error(value: Any, bounds: dict[str, float]) -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if "ge" in bounds and not value >= bounds["ge"]:
        return f"must be >= {bounds['ge']:g}"
    if "gt" in bounds and not value > bounds["gt"]:
        return f"must be > {bounds['gt']:g}"
    if "le" in bounds and not value <= bounds["le"]:
        return f"must be <= {bounds['le']:g}"
    return None


def check(obj: Any) -> None:
    """Check every field of the dataclass ``obj`` against its type hint and bounds.

    Raises:
        ValueError: naming the first field that does not fit, e.g.
            ``GRPOConfig.group_size must be >= 2, got 1``.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        reason = _type_error(hints.get(f.name, Any), value)
        if reason is None:
            bounds = f.metadata.get("bounds", {})
            values = value if isinstance(value, tuple) else (value,)
            reason = next((r for r in (_bound_error(v, bounds) for v in values) if r), None)
        if reason is not None:
            raise ValueError(f"{type(obj).__name__}.{f.name} {reason}, got {value!r}")


@lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of the dataclass ``cls`` (and its bases), by name.

    The same text tyro shows as a field's help; used where a class is derived from another one
    (the sweep's grid from the cell) so the derived options keep their help.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def values_of(obj: Any, cls: type | None = None) -> dict[str, Any]:
    """``obj``'s values of the dataclass ``cls``'s fields (default: ``obj``'s own): how a command's
    settings, which extend several dataclasses, give back each of them."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls or obj)}


class Config:
    """Base of the project's settings dataclasses: checked at construction (:func:`check`)."""

    def __post_init__(self) -> None:
        check(self)

    def validate(self: C) -> C:
        """Check the fields again (instances are checked when made; this is for callers that
        hold a config of unknown origin); returns ``self``."""
        check(self)
        return self

    def replace(self: C, **changes: Any) -> C:
        """A checked copy with ``changes``; an unknown name is a ``TypeError`` listing the known ones."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise TypeError(f"unknown {type(self).__name__} setting(s) {unknown}; known: {known}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (nested configs as dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """The config of :meth:`to_dict`'s dict (nested configs rebuilt), checked; unknown keys refused."""
        if not isinstance(data, dict):
            raise ValueError(f"a {cls.__name__} needs a dict, got {type(data).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}")
        hints = _hints(cls)
        values = {}
        for name, value in data.items():
            hint = hints.get(name)
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                value = hint.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)  # JSON has no tuples
            values[name] = value
        return cls(**values)


__all__ = ["Config", "bounded", "check", "field_docs", "values_of"]
