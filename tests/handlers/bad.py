"""Objects that ``--handler`` must refuse, one per reason."""

from __future__ import annotations

from nats.aio.msg import Msg

NOT_CALLABLE = 42


def plain(msg: Msg) -> None:
    """A plain def: would block the event loop."""


async def no_arguments() -> None:
    """Cannot receive the message."""


async def two_arguments(msg: Msg, reply: str) -> None:
    """Needs a second positional argument the worker does not have."""


async def keyword_only(*, msg: Msg) -> None:
    """Cannot receive the message positionally."""


class NotAsync:
    """Callable, but its ``__call__`` is a plain def."""

    def __call__(self, msg: Msg) -> None:
        pass


not_async = NotAsync()
