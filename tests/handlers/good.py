"""Handlers that load: the shapes of ``async def`` the worker can await."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg

Handler = Callable[[Msg], Awaitable[None]]


async def handle(msg: Msg) -> None:
    """The usual shape: one positional argument."""


async def handle_with_option(msg: Msg, verbose: bool = False) -> None:
    """Extra parameters are fine while they have defaults."""


class Counter:
    """An object whose ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.seen = 0

    async def __call__(self, msg: Msg) -> None:
        self.seen += 1


counter = Counter()


def logged(function: Handler) -> Handler:
    """A decorator that keeps the wrapped coroutine function visible."""

    @functools.wraps(function)
    def wrapper(msg: Msg) -> Awaitable[None]:
        return function(msg)

    return wrapper


@logged
async def decorated(msg: Msg) -> None:
    """A decorated handler: a plain wrapper around an async def."""


class Service:
    """Handlers reached through a dotted attribute path."""

    @staticmethod
    async def handle(msg: Msg) -> None:
        pass


def extras(**options: Any) -> None:
    """Not a handler; keeps the module honest about what it exports."""
