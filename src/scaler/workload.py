"""What a message costs: the ``--work`` grammar and the work itself.

A work spec is one or more steps joined by ``+``, done in order for
every message:

- ``none``: nothing at all; measures the framework's own overhead.
- ``sleep:D`` or ``sleep:A-B``: wait D, or a uniform draw from A to B,
  without holding the CPU (I/O-bound work).
- ``exp:M``: wait an exponentially distributed time with mean M: mostly
  short, now and then long, as real I/O is.
- ``cpu:D``: keep the CPU busy for D of this thread's CPU time
  (CPU-bound work; holds the GIL throughout).
- ``fail:P``: after the other steps, raise for a fraction P of messages
  (``0.05`` or ``5%``), chosen by sequence number so that a run is
  repeatable.  A failed message is counted as an error, not lost.

Durations are a number followed by ``ms`` or ``s``; a bare number means
seconds.  Examples: ``sleep:0-0.5``, ``exp:20ms+cpu:1ms``,
``sleep:10ms+fail:2%``.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from dataclasses import dataclass
from enum import StrEnum

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")
_GOLDEN = (math.sqrt(5) - 1) / 2  # spreads failures evenly over sequence numbers

GRAMMAR = "none, sleep:D, sleep:A-B, exp:M, cpu:D, fail:P, joined by +"


class WorkSpecError(ValueError):
    """A ``--work`` value that does not follow the grammar."""


class WorkFailed(Exception):
    """Raised by the ``fail:P`` step: the message's work failed on purpose."""


class WorkKind(StrEnum):
    SLEEP = "sleep"
    EXP = "exp"
    CPU = "cpu"


class Bound(StrEnum):
    """What limits a workload: nothing, waiting, computing, or both."""

    NONE = "none"
    IO = "io"
    CPU = "cpu"
    MIXED = "mixed"


def parse_duration(text: str) -> float:
    """Parse ``20ms``, ``0.5s`` or ``0.5`` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise WorkSpecError(f"{text!r} is not a duration (try 20ms or 0.5s)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def format_duration(seconds: float) -> str:
    """``seconds`` in ms below a second, else in s; exact, so it parses back."""
    if 0 < seconds < 1:
        ms = f"{seconds * 1000:.12g}"
        if float(ms) / 1000 == seconds:
            return f"{ms}ms"
    return _plain(seconds) + "s"


def _plain(value: float) -> str:
    """``value`` in decimal digits, never an exponent, exact enough to parse back."""
    text = repr(value)
    if "e" in text:
        text = f"{value:.17f}".rstrip("0").rstrip(".")
    return text.removesuffix(".0")


def _parse_fraction(text: str) -> float:
    text = text.strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise WorkSpecError(f"{text!r} is not a fraction (try 0.05 or 5%)") from None
    if not 0 <= value <= 1:
        raise WorkSpecError(f"failure rate {text!r} is outside 0-1")
    return value


@dataclass(frozen=True)
class Step:
    """One part of a message's cost."""

    kind: WorkKind
    low_s: float
    high_s: float

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    def draw(self) -> float:
        """Seconds this step costs for one message."""
        if self.kind is WorkKind.EXP:
            return random.expovariate(1 / self.low_s) if self.low_s else 0.0
        if self.low_s == self.high_s:
            return self.low_s
        return random.uniform(self.low_s, self.high_s)

    def __str__(self) -> str:
        if self.low_s == self.high_s:
            return f"{self.kind.value}:{format_duration(self.low_s)}"
        low, high = format_duration(self.low_s), format_duration(self.high_s)
        return f"{self.kind.value}:{low}-{high}"

    @classmethod
    def parse(cls, kind: WorkKind, arg: str) -> Step:
        if not arg:
            raise WorkSpecError(
                f"{kind.value!r} needs a duration, as in {kind.value}:20ms"
            )
        low_text, dash, high_text = arg.partition("-")
        if dash and kind is not WorkKind.SLEEP:
            raise WorkSpecError(
                f"{kind.value} takes one duration, as in {kind.value}:5ms"
            )
        low = parse_duration(low_text)
        high = parse_duration(high_text) if dash else low
        if high < low:
            raise WorkSpecError(f"range {arg!r} runs backwards")
        return cls(kind, low, high)


@dataclass(frozen=True)
class WorkSpec:
    """The cost of one message, drawn afresh for every message."""

    steps: tuple[Step, ...] = ()
    fail_rate: float = 0.0

    @classmethod
    def parse(cls, text: str) -> WorkSpec:
        steps: list[Step] = []
        fail_rate = 0.0
        for term in text.split("+"):
            name, _, arg = term.strip().partition(":")
            name = name.lower()
            if name == "none" and not arg:
                continue
            if name == "fail":
                fail_rate = _parse_fraction(arg)
                continue
            try:
                kind = WorkKind(name)
            except ValueError:
                raise WorkSpecError(
                    f"unknown work {term.strip()!r}: use {GRAMMAR}"
                ) from None
            steps.append(Step.parse(kind, arg.strip()))
        return cls(tuple(steps), fail_rate)

    def __str__(self) -> str:
        terms = [str(step) for step in self.steps]
        if self.fail_rate:
            terms.append(f"fail:{_plain(self.fail_rate)}")
        return "+".join(terms) or "none"

    @property
    def mean_io_s(self) -> float:
        return sum(s.mean_s for s in self.steps if s.kind is not WorkKind.CPU)

    @property
    def mean_cpu_s(self) -> float:
        return sum(s.mean_s for s in self.steps if s.kind is WorkKind.CPU)

    @property
    def mean_s(self) -> float:
        return self.mean_io_s + self.mean_cpu_s

    @property
    def bound(self) -> Bound:
        io, cpu = self.mean_io_s > 0, self.mean_cpu_s > 0
        if io and cpu:
            return Bound.MIXED
        return Bound.IO if io else Bound.CPU if cpu else Bound.NONE

    @property
    def is_cpu_bound(self) -> bool:
        return self.bound is Bound.CPU

    def fails(self, seq: int) -> bool:
        """Whether message ``seq`` fails: the same answer in every run."""
        return (seq * _GOLDEN) % 1.0 < self.fail_rate

    async def perform(self, seq: int) -> None:
        """Do message ``seq``'s work on the running loop."""
        for step in self.steps:
            if step.kind is WorkKind.CPU:
                burn_cpu(step.draw())
            else:
                await asyncio.sleep(step.draw())
        if self.fail_rate and self.fails(seq):
            raise WorkFailed(f"message {seq} failed on purpose")


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU time.

    CPU time, not wall time: under contention from other processes the
    work costs the same and simply takes longer, as real computation does.
    """
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
