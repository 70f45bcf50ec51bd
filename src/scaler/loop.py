"""Running a coroutine on a fresh event loop, created in this process."""

from __future__ import annotations

import asyncio
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
