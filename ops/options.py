"""Checks of a command's numeric options, once, before the command creates anything.

Every ``int`` and ``float`` field of a command's config (nested dataclasses and tuples included)
must be finite and at least 0 (counts, sizes, seeds, rates, weights), unless the field declares
its own range next to it in the dataclass field's metadata, in interval notation::

    steps: int = field(default=6000, metadata={"range": "[1, inf)"})

Plain metadata keeps ``agent``, ``sim`` and ``driving`` free of an import from ``ops``; the
pass that reads it is :func:`check_options`, called by the CLI on the parsed config. Rules that
relate two fields stay in the config's ``__post_init__`` (raising ``ValueError``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

RANGE_KEY = "range"
"""Field-metadata key holding a field's allowed interval, e.g. ``"(0, 1]"``."""

DEFAULT_RANGE = "[0, inf)"
"""The range of a numeric field that declares none; ``"(-inf, inf)"`` allows any finite value."""

_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*$")


class OptionError(ValueError):
    """A command-line option outside its allowed range."""

    user_facing = True


@dataclasses.dataclass(frozen=True)
class Interval:
    """A real interval with open or closed ends (``inf`` ends are open)."""

    low: float
    high: float
    low_closed: bool
    high_closed: bool

    @classmethod
    def parse(cls, text: str) -> "Interval":
        m = _INTERVAL.match(text)
        if m is None:
            raise ValueError(f"bad interval {text!r}; write e.g. '[1, inf)' or '(0, 1]'.")
        lo, hi = float(m.group(2)), float(m.group(3))
        if not lo <= hi:
            raise ValueError(f"empty interval {text!r}.")
        return cls(lo, hi, m.group(1) == "[" and math.isfinite(lo), m.group(4) == "]" and math.isfinite(hi))

    def __contains__(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x >= self.low if self.low_closed else x > self.low
        below = x <= self.high if self.high_closed else x < self.high
        return above and below

    def describe(self, integer: bool) -> str:
        """The interval in words: "at least 1", "positive", "in (0, 1]"."""
        kind = "an integer" if integer else "a finite number"
        lo, hi = _num(self.low), _num(self.high)
        if math.isinf(self.high) and math.isinf(self.low):
            return kind
        if math.isinf(self.high):
            if self.low == 0 and not self.low_closed:
                return f"{kind} above 0"
            return f"{kind} {'at least' if self.low_closed else 'above'} {lo}"
        if math.isinf(self.low):
            return f"{kind} {'at most' if self.high_closed else 'below'} {hi}"
        return f"{kind} in {'[' if self.low_closed else '('}{lo}, {hi}{']' if self.high_closed else ')'}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def option_name(path: tuple[str, ...]) -> str:
    """The flag tyro makes of a nested field: ``("ppo", "num_envs")`` → ``--ppo.num-envs``."""
    return "--" + ".".join(p.replace("_", "-") for p in path)


def _numeric_kind(tp: Any) -> tuple[type | None, bool]:
    """(int or float or None, whether the value is a tuple of them) of a field's type hint."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _numeric_kind(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _numeric_kind(args[0]) if len(args) == 1 else (None, False)
    if origin is tuple:
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        kinds = {_numeric_kind(a)[0] for a in inner}
        return (kinds.pop(), True) if len(kinds) == 1 and None not in kinds else (None, False)
    if tp is bool:
        return None, False
    if tp in (int, float):
        return tp, False
    return None, False


def field_problems(config: Any, prefix: tuple[str, ...] = ()) -> list[str]:
    """One sentence per numeric field of ``config`` (recursively) that is outside its range."""
    problems: list[str] = []
    hints = typing.get_type_hints(type(config), include_extras=True)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        path = prefix + (f.name,)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            problems += field_problems(value, path)
            continue
        kind, is_tuple = _numeric_kind(hints.get(f.name, Any))
        if kind is None or value is None:
            continue
        declared = f.metadata.get(RANGE_KEY)
        interval = Interval.parse(declared or DEFAULT_RANGE)
        values = value if is_tuple else (value,)
        bad = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v not in interval]
        if bad:
            what = "each value of " if is_tuple else ""
            got = ", ".join(_show(v) for v in bad) if is_tuple else _show(bad[0])
            problems.append(f"{what}{option_name(path)} must be {interval.describe(kind is int)}, got {got}.")
    return problems


def _show(v: float) -> str:
    return str(v) if isinstance(v, int) else ("nan" if math.isnan(v) else repr(v) if math.isfinite(v) else str(v))


def check_options(config: Any) -> None:
    """Raise :class:`OptionError` (one sentence, the first problem) when a numeric option is out of range."""
    if not dataclasses.is_dataclass(config):
        return
    problems = field_problems(config)
    if problems:
        more = f" ({len(problems) - 1} more option(s) are out of range too.)" if len(problems) > 1 else ""
        raise OptionError(problems[0] + more)


def numeric_fields(config_type: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    """(flag, type, range) of every numeric option of a config type; for ``--help`` audits and tests."""
    out = []
    hints = typing.get_type_hints(config_type, include_extras=True)
    for f in dataclasses.fields(config_type):
        tp = hints.get(f.name, Any)
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, prefix + (f.name,))
            continue
        kind, _ = _numeric_kind(tp)
        if kind is not None:
            out.append((option_name(prefix + (f.name,)), kind.__name__,
                        f.metadata.get(RANGE_KEY) or DEFAULT_RANGE))
    return out
