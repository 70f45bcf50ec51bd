"""Event loops: a fresh one for each process, and the signals it listens to."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class LoopKind(StrEnum):
    UVLOOP = "uvloop"
    ASYNCIO = "asyncio"


def _factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind is LoopKind.ASYNCIO:
        return None
    try:
        import uvloop
    except ImportError:  # uvloop is optional where it cannot be installed
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], kind: LoopKind = LoopKind.UVLOOP) -> T:
    """Run ``main`` to completion on a new loop of ``kind``.

    The loop is created here, in the calling process, never inherited
    from a parent: a forked loop shares its parent's epoll descriptor.
    """
    with asyncio.Runner(loop_factory=_factory(kind)) as runner:
        return runner.run(main)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signals(callback: Callable[[int], None]) -> None:
    """Have the running loop call ``callback(signum)`` on SIGINT or SIGTERM.

    The callback runs on the loop, between steps: it records that the
    signal came, and the main coroutine decides what to do about it.
    """
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, callback, signum)
