"""Loading the user's message handler named by ``--handler module:function``.

Runs in each worker process, before it subscribes.  The spec names an
importable module and an attribute inside it, which may be dotted
(``app.handlers:Digest.handle``).  The current working directory goes
first on ``sys.path``, so a module beside the command is found without
installing it, as a web server's ``--app-dir`` default does.

The handler must be an ``async def`` (a coroutine function, or an object
whose ``__call__`` is one) that accepts exactly one positional argument:
the nats-py ``Msg``, whose ``.data`` is the message body without scaler's
header.  The worker awaits it on its event loop, ``--limit`` at a time.

A plain ``def`` is rejected rather than run in a thread pool.  Hidden in
a pool, it would be bounded by the pool's size (a handful of threads)
instead of by ``--limit``, and the measurement would report that bound as
the handler's scaling.  A blocking handler says so itself, in one line::

    async def handle(msg):
        await asyncio.to_thread(blocking_work, msg.data)

so the thread pool shows up in the code that is measured.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

Handler = Callable[[Msg], Awaitable[None]]

EXAMPLE_SPEC = "examples.digest:handle"


class HandlerError(ValueError):
    """A ``--handler`` that cannot be loaded or used; the message is one line."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"--handler {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason


def load_handler(spec: str, app_dir: str | os.PathLike[str] | None = None) -> Handler:
    """Import the handler ``spec`` names and check that the worker can await it.

    ``app_dir`` (default: the current directory) goes first on
    ``sys.path``.  Raises HandlerError for a malformed spec, a module that
    cannot be imported or fails while importing, a missing attribute, or
    an object that is not an ``async def`` of one positional argument.
    """
    module_name, attribute = _split(spec)
    _put_first_on_path(Path(app_dir) if app_dir is not None else Path.cwd())
    module = _import(spec, module_name)
    target = _resolve(spec, module, module_name, attribute)
    _check_callable(spec, target)
    handler: Handler = target
    return handler


def _split(spec: str) -> tuple[str, str]:
    module_name, colon, attribute = spec.partition(":")
    parts_ok = all(
        part.isidentifier() for part in (*module_name.split("."), *attribute.split("."))
    )
    if not colon or not parts_ok:
        raise HandlerError(spec, f"expected module:function, as in {EXAMPLE_SPEC}")
    return module_name, attribute


def _put_first_on_path(directory: Path) -> None:
    entry = str(directory.resolve())
    if not sys.path or sys.path[0] != entry:
        sys.path.insert(0, entry)


def _import(spec: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _is_prefix(exc.name, module_name):
            raise HandlerError(
                spec, f"no module named {exc.name!r} in {sys.path[0]} or sys.path"
            ) from None
        raise HandlerError(spec, f"importing {module_name!r} failed: {exc}") from None
    except (Exception, SystemExit) as exc:
        raise HandlerError(
            spec, f"importing {module_name!r} raised {_describe(exc)}"
        ) from None


def _is_prefix(missing: str, module_name: str) -> bool:
    """Whether ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(missing + ".")


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())  # one line, whatever the message held
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _resolve(spec: str, module: Any, module_name: str, attribute: str) -> Any:
    target = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise HandlerError(
                spec, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    return target


def _check_callable(spec: str, target: Any) -> None:
    if not callable(target):
        raise HandlerError(spec, f"{type(target).__name__} object is not callable")
    if not _is_async(target):
        raise HandlerError(
            spec,
            "a plain def would block the event loop: make it async def "
            "(wrap blocking work in await asyncio.to_thread(...))",
        )
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # not introspectable; a wrong call will count as an error
    try:
        signature.bind(None)
    except TypeError:
        raise HandlerError(
            spec,
            f"takes {_bare(signature)}; it must accept exactly one positional "
            "argument, the message",
        ) from None


def _bare(signature: inspect.Signature) -> str:
    """The parameters alone, as ``(msg, reply)``: annotations add only noise."""
    empty = inspect.Parameter.empty
    parameters = [p.replace(annotation=empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=parameters, return_annotation=empty))


def _is_async(target: Any) -> bool:
    """A coroutine function, directly, through a wrapper, or as ``__call__``."""
    candidates = [target, type(target).__call__]
    with contextlib.suppress(ValueError):  # a wrapper chain that loops
        candidates.append(inspect.unwrap(target))
    return any(inspect.iscoroutinefunction(c) for c in candidates)
