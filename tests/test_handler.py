"""Loading ``--handler module:function``: what loads, what is refused and why.

The fixture modules live in ``tests/handlers``; the examples are loaded
from the repository root, as a user running scaler there would, and run
against a real nats-server.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from conftest import NatsServer
from scaler.handler import HandlerError, load_handler
from scaler.server import connect

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent
ASYNC_TIMEOUT_S = 20.0  # bound on each test's event loop work

T = TypeVar("T")


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_handler puts a directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(factory(), ASYNC_TIMEOUT_S)

    return asyncio.run(bounded())


# --- what loads ----------------------------------------------------------------


def test_an_async_function_of_one_argument_loads_as_itself() -> None:
    import handlers.good

    assert load_handler("handlers.good:handle", TESTS_DIR) is handlers.good.handle


def test_the_current_directory_is_searched_first_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    module = f"beside_{secrets.token_hex(4)}"  # a name no earlier test imported
    (tmp_path / f"{module}.py").write_text("async def handle(msg):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    handler = load_handler(f"{module}:handle")
    assert handler.__module__ == module
    assert sys.path[0] == str(tmp_path.resolve())


@pytest.mark.parametrize(
    "attribute",
    ["handle_with_option", "counter", "decorated", "Service.handle"],
)
def test_other_awaitable_shapes_of_one_argument_load(attribute: str) -> None:
    import handlers.good

    expected: object = handlers.good
    for name in attribute.split("."):
        expected = getattr(expected, name)
    assert load_handler(f"handlers.good:{attribute}", TESTS_DIR) is expected


# --- what is refused -------------------------------------------------------------


def refusal(spec: str) -> str:
    with pytest.raises(HandlerError) as caught:
        load_handler(spec, TESTS_DIR)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--handler {spec!r}: ")
    return message


@pytest.mark.parametrize(
    "spec",
    [
        "handlers.good",
        "handlers.good:",
        ":handle",
        "handlers.good:handle:extra",
        "handlers/good.py:handle",
        "handlers.good:handle()",
        "",
    ],
)
def test_a_spec_not_shaped_module_colon_function_is_refused(spec: str) -> None:
    assert "expected module:function" in refusal(spec)


def test_a_module_that_does_not_exist_is_named() -> None:
    message = refusal("handlers.absent:handle")
    assert "no module named 'handlers.absent'" in message


def test_a_missing_dependency_of_the_module_is_reported_as_such() -> None:
    message = refusal("handlers.missing_dependency:handle")
    assert "importing 'handlers.missing_dependency' failed" in message
    assert "scaler_fixture_dependency_that_is_not_installed" in message


def test_an_exception_while_importing_is_reported_on_one_line() -> None:
    message = refusal("handlers.raises_on_import:handle")
    assert "raised RuntimeError: configuration missing: set APP_CONFIG" in message


def test_a_missing_attribute_is_named() -> None:
    message = refusal("handlers.good:absent")
    assert "module 'handlers.good' has no attribute 'absent'" in message


def test_an_object_that_is_not_callable_is_refused() -> None:
    assert "int object is not callable" in refusal("handlers.bad:NOT_CALLABLE")


@pytest.mark.parametrize("attribute", ["plain", "not_async"])
def test_a_plain_def_is_refused_with_the_way_to_wrap_it(attribute: str) -> None:
    message = refusal(f"handlers.bad:{attribute}")
    assert "make it async def" in message
    assert "asyncio.to_thread" in message


@pytest.mark.parametrize(
    ("attribute", "shown"),
    [
        ("no_arguments", "()"),
        ("two_arguments", "(msg, reply)"),
        ("keyword_only", "(*, msg)"),
    ],
)
def test_a_handler_that_cannot_take_the_message_alone_is_refused(
    attribute: str, shown: str
) -> None:
    message = refusal(f"handlers.bad:{attribute}")
    assert f"takes {shown}; it must accept exactly one positional" in message


def test_handler_errors_are_value_errors_for_the_command_line() -> None:
    assert issubclass(HandlerError, ValueError)


# --- the examples, against a real server ------------------------------------------


def test_the_digest_example_answers_with_the_derived_key(
    nats_server: NatsServer,
) -> None:
    on_loop = load_handler("examples.digest:handle", REPO_ROOT)
    in_thread = load_handler("examples.digest:handle_in_thread", REPO_ROOT)
    from examples.digest import ITERATIONS, SALT  # importable once loaded

    body = b"hello 7"
    expected = hashlib.pbkdf2_hmac("sha256", body, SALT, ITERATIONS).hex().encode()

    async def ask_both() -> list[bytes]:
        nc = await connect(nats_server.url, nats_server.token)
        try:
            await nc.subscribe("digest.loop", cb=on_loop)
            await nc.subscribe("digest.thread", cb=in_thread)
            replies = [
                await nc.request(subject, body, timeout=5)
                for subject in ("digest.loop", "digest.thread")
            ]
            return [reply.data for reply in replies]
        finally:
            await nc.close()

    assert run(ask_both) == [expected, expected]


def test_the_spool_example_acknowledges_after_the_body_is_on_disk(
    nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = load_handler("examples.spool:handle", REPO_ROOT)
    from examples import spool  # importable once loaded

    monkeypatch.setenv(spool.SPOOL_DIR_ENV, str(tmp_path))
    bodies = [b"hello 0", b"", b"hello 2" * 100]

    async def spool_all() -> list[bytes]:
        nc = await connect(nats_server.url, nats_server.token)
        try:
            await nc.subscribe("spool", cb=handler)
            return [(await nc.request("spool", b, timeout=5)).data for b in bodies]
        finally:
            await nc.close()

    assert run(spool_all) == [b"ok"] * len(bodies)
    assert spool.read_records(spool.spool_path()) == bodies
