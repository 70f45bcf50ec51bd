"""What a message costs: the ``--work`` grammar and the work itself.

A work spec is one of:

- ``none``: nothing at all; measures the framework's own overhead.
- ``sleep:D`` or ``sleep:A-B``: wait D, or a uniform draw from A to B,
  without holding the CPU (I/O-bound work).
- ``cpu:D``: keep the CPU busy for D of this thread's CPU time
  (CPU-bound work; holds the GIL throughout).

Durations are a number followed by ``ms`` or ``s``; a bare number means
seconds.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass
from enum import StrEnum

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


class WorkSpecError(ValueError):
    """A ``--work`` value that does not follow the grammar."""


class WorkKind(StrEnum):
    NONE = "none"
    SLEEP = "sleep"
    CPU = "cpu"


def parse_duration(text: str) -> float:
    """Parse ``20ms``, ``0.5s`` or ``0.5`` into seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise WorkSpecError(f"{text!r} is not a duration (try 20ms or 0.5s)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def format_duration(seconds: float) -> str:
    """The shortest of ``ms`` or ``s`` that states ``seconds`` exactly."""
    if seconds == 0 or seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


@dataclass(frozen=True)
class WorkSpec:
    """The cost of one message, drawn afresh for every message."""

    kind: WorkKind
    low_s: float = 0.0
    high_s: float = 0.0

    @classmethod
    def parse(cls, text: str) -> WorkSpec:
        kind_text, _, arg = text.strip().partition(":")
        try:
            kind = WorkKind(kind_text.lower())
        except ValueError:
            raise WorkSpecError(
                f"unknown work {kind_text!r}: use none, sleep:D, sleep:A-B or cpu:D"
            ) from None
        if kind is WorkKind.NONE:
            if arg:
                raise WorkSpecError("'none' takes no argument")
            return cls(kind)
        if not arg:
            raise WorkSpecError(
                f"{kind.value!r} needs a duration, as in {kind.value}:20ms"
            )
        low_text, dash, high_text = arg.partition("-")
        low = parse_duration(low_text)
        high = parse_duration(high_text) if dash else low
        if kind is WorkKind.CPU and dash:
            raise WorkSpecError("cpu work takes one duration, as in cpu:5ms")
        if high < low:
            raise WorkSpecError(f"range {arg!r} runs backwards")
        return cls(kind, low, high)

    def __str__(self) -> str:
        if self.kind is WorkKind.NONE:
            return "none"
        if self.low_s == self.high_s:
            return f"{self.kind.value}:{format_duration(self.low_s)}"
        low, high = format_duration(self.low_s), format_duration(self.high_s)
        return f"{self.kind.value}:{low}-{high}"

    @property
    def mean_s(self) -> float:
        return (self.low_s + self.high_s) / 2

    @property
    def is_cpu_bound(self) -> bool:
        return self.kind is WorkKind.CPU

    def draw(self) -> float:
        """Seconds this message costs."""
        if self.low_s == self.high_s:
            return self.low_s
        return random.uniform(self.low_s, self.high_s)

    async def perform(self) -> None:
        """Do one message's work on the running loop."""
        if self.kind is WorkKind.SLEEP:
            await asyncio.sleep(self.draw())
        elif self.kind is WorkKind.CPU:
            burn_cpu(self.draw())


def burn_cpu(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU time.

    CPU time, not wall time: under contention from other processes the
    work costs the same and simply takes longer, as real computation does.
    """
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass
