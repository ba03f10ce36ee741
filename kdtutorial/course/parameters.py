"""Checking a notebook's papermill parameters, and filling the ones left to the profile.

Every notebook has a ``parameters`` cell of plain literals. Right below it, ``kd.lessons.settle(...)`` checks each
value against the rule its lesson declares (:mod:`kdtutorial.course.lessons`; the machinery is here:
``check_parameters``, the rule classes, ``Lesson``, ``Requires``) and fills any parameter left as ``None`` from the
chosen profile (``"quick"`` for a laptop CPU, ``"full"`` for a GPU). A bad value stops the notebook with a
``ParameterError`` that names the parameter, the value it got and what is allowed, e.g.::

    ParameterError: N_SEEDS = 0 is not allowed: expected an integer from 1 to 50
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

PROFILES = ("quick", "full")


class ParameterError(ValueError):
    """A notebook parameter has a value outside what the notebook accepts."""


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ParameterError(f"{name} = {value!r} is not allowed: expected {allowed}")


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""

    options: tuple

    def __init__(self, *options):
        object.__setattr__(self, "options", tuple(options))

    def check(self, name, value):
        if value not in self.options:
            _fail(name, value, "one of " + ", ".join(repr(o) for o in self.options))
        return value


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]`` (``high=None``: no upper bound)."""

    low: int | None = None
    high: int | None = None

    def describe(self):
        if self.low is not None and self.high is not None:
            return f"an integer from {self.low} to {self.high}"
        if self.low is not None:
            return f"an integer >= {self.low}"
        if self.high is not None:
            return f"an integer <= {self.high}"
        return "an integer"

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, value, self.describe())
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            _fail(name, value, self.describe())
        return value


@dataclass(frozen=True)
class Float:
    """A real number in ``[low, high]``; ``low_open=True`` excludes ``low`` itself (e.g. T > 0)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False

    def describe(self):
        lo = "" if self.low is None else (f"> {self.low}" if self.low_open else f">= {self.low}")
        hi = "" if self.high is None else f"<= {self.high}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return "a number" + (f" {bounds}" if bounds else "")

    def check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, value, self.describe())
        number = float(value)
        too_low = self.low is not None and (number <= self.low if self.low_open else number < self.low)
        too_high = self.high is not None and number > self.high
        if too_low or too_high or number != number:
            _fail(name, value, self.describe())
        return number


@dataclass(frozen=True)
class ListOf:
    """A list (or tuple) whose items each pass ``item``; non-empty unless ``empty`` allows it."""

    item: Any
    empty: bool = False

    def check(self, name, value):
        if not isinstance(value, (list, tuple)) or not (value or self.empty):
            _fail(name, value, "a list" if self.empty else "a non-empty list")
        return [self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Text:
    """A non-empty string (e.g. a model name or a folder)."""

    def check(self, name, value):
        if not isinstance(value, str) or not value.strip():
            _fail(name, value, "a non-empty string")
        return value


@dataclass(frozen=True)
class Flag:
    """``True`` or ``False``."""

    def check(self, name, value):
        if not isinstance(value, bool):
            _fail(name, value, "True or False")
        return value


@dataclass(frozen=True)
class Requires:
    """A rule across parameters: ``holds(P)`` must be true of the settled values, else the first of ``names`` is
    reported, with the values of the others, and ``allowed`` says what is expected."""

    names: tuple
    holds: Callable[[SimpleNamespace], bool]
    allowed: str

    def check(self, settled: SimpleNamespace) -> None:
        if not self.holds(settled):
            first, *others = self.names
            context = ", ".join(f"{n} = {getattr(settled, n)!r}" for n in others)
            context = f" with {context}" if others else ""
            raise ParameterError(f"{first} = {getattr(settled, first)!r} is not allowed{context}: "
                                 f"expected {self.allowed}")


#: The four parameters every notebook of the suite shares.
COMMON_RULES = {
    "PROFILE": Choice(*PROFILES),
    "SEED": Int(0, 2**31 - 1),
    "N_SEEDS": Int(1, 50),
    "DEVICE": Choice("auto", "cpu", "cuda"),
}


def check_parameters(given: Mapping[str, Any], rules: Mapping[str, Any], profiles: Mapping[str, Mapping[str, Any]]) -> SimpleNamespace:
    """Check notebook parameters and fill the ``None`` ones from the profile.

    ``given``: the parameter values as set in the notebook (or injected by papermill), e.g.
    ``dict(PROFILE=PROFILE, SEED=SEED, N_SEEDS=N_SEEDS, ...)``. ``rules``: name -> rule (``Choice``,
    ``Int``, ``Float``, ``ListOf``); the common four are added unless given. ``profiles``: profile name
    -> default values for the parameters the profile decides. A value given explicitly always wins over
    the profile. Returns a namespace with every parameter settled.
    """
    rules = {**COMMON_RULES, **rules}
    unknown = sorted(set(given) - set(rules))
    if unknown:
        raise ParameterError(f"no rule for parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(rules))}")
    profile = rules["PROFILE"].check("PROFILE", given.get("PROFILE", "quick"))
    if profile not in profiles:
        raise ParameterError(f"PROFILE = {profile!r} has no settings in this notebook; known: {', '.join(profiles)}")
    settled = {}
    for name, rule in rules.items():
        value = given.get(name)
        if value is None:
            value = profiles[profile].get(name)
        if value is None:
            raise ParameterError(f"{name} is None and profile {profile!r} does not set it: give {name} a value")
        settled[name] = rule.check(name, value)
    return SimpleNamespace(**settled)


@dataclass(frozen=True)
class Lesson:
    """One lesson's parameters: ``rules`` (name -> rule, in the order the notebook prints them; the four
    ``COMMON_RULES`` come first), the ``quick`` and ``full`` profiles (values for the parameters a notebook leaves
    as ``None``) and ``requires`` (rules across parameters, checked after every single one passed)."""

    rules: Mapping[str, Any]
    quick: Mapping[str, Any]
    full: Mapping[str, Any]
    requires: tuple = field(default=())

    @property
    def all_rules(self) -> dict:
        return {**COMMON_RULES, **self.rules}

    def settle(self, given: Mapping[str, Any]) -> SimpleNamespace:
        """``check_parameters(given, rules, profiles)`` with this lesson's rules and profiles, then its cross rules."""
        settled = check_parameters(given, self.rules, {"quick": self.quick, "full": self.full})
        for rule in self.requires:
            rule.check(settled)
        return settled
