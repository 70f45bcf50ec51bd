"""Shared fixtures: a real nats-server, child processes with hard time bounds,
and a check that no test leaves a process behind.

Every process a test starts through these fixtures carries a per-test mark
in its environment, and so does everything it starts in turn (workers,
an embedded nats-server, a Procfile manager's children).  After each test
the mark is looked for in ``/proc``: a process that still carries it was
left behind, and the test fails.

Nothing here sleeps to synchronise: output is awaited line by line with a
deadline, and process exits through pidfds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

MARK_ENV = "SCALER_TEST_MARK"  # carried by every process a test starts
SUPPORT_DIR = Path(__file__).parent / "support"

CHILD_TIMEOUT_S = 30.0  # default bound on one child process, start to exit
LINE_TIMEOUT_S = 15.0  # default bound on waiting for one expected line
LEFTOVER_WAIT_S = 3.0  # for stragglers to exit after the test, before failing
SERVER_READY_S = 10.0  # nats-server start to "Server is ready"
SERVER_STOP_S = 5.0  # nats-server SIGTERM to SIGKILL
READER_JOIN_S = 5.0  # for a child's pipes to close once it has exited

# Keys every run of a JSON document carries, and every process of a run.
RUN_KEYS = {
    "strategy",
    "procs",
    "limit",
    "published",
    "processed",
    "lost",
    "duplicates",
    "foreign",
    "wall_s",
    "ideal_wall_s",
    "throughput",
    "effective_concurrency",
    "efficiency",
    "latency_ms",
    "processes",
    "dead_workers",
}
PROCESS_KEYS = {"name", "pid", "processed", "cpu_s", "max_rss_mb", "exit_code", "died"}

_LISTENING = re.compile(r"Listening for client connections on (\S+):(\d+)")


# --- output, read line by line with deadlines ---------------------------------


class LineReader:
    """Reads a child's pipe on a thread; lets a test wait for a given line."""

    def __init__(self, stream: IO[bytes], label: str) -> None:
        self.label = label
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._read, args=(stream,), name=f"read {label}", daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for raw in stream:
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            stream.close()
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def expect(self, pattern: str, timeout_s: float = LINE_TIMEOUT_S) -> re.Match[str]:
        """The first line, seen so far or to come, that matches ``pattern``.

        Fails the test when the pipe closes or ``timeout_s`` passes first.
        """
        regex = re.compile(pattern)
        checked = 0
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines[checked:]:
                    match = regex.search(line)
                    if match:
                        return match
                checked = len(self.lines)
                if self.closed:
                    pytest.fail(f"{self.label} closed without {pattern!r}:\n{self}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no {pattern!r} on {self.label} within {timeout_s} s")
                self._changed.wait(remaining)

    def join(self, timeout_s: float = READER_JOIN_S) -> str:
        """All the text, once the pipe has closed."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            pytest.fail(f"{self.label} still open {timeout_s} s after the exit")
        return str(self)

    def __str__(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


# --- processes -----------------------------------------------------------------


@dataclass
class Finished:
    """How a child ended and everything it wrote."""

    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        """stdout as one JSON document; fails the test when it is not one."""
        try:
            doc = json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            pytest.fail(f"stdout is not JSON ({exc}):\n{self.stdout}\n{self.stderr}")
        assert isinstance(doc, dict)
        return doc


class Child:
    """One child process in a session of its own, with its pipes read."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], label: str) -> None:
        self.label = label
        self.popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self.stdout = LineReader(self.popen.stdout, f"{label} stdout")
        self.stderr = LineReader(self.popen.stderr, f"{label} stderr")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def send_signal(self, signum: int, *, group: bool = False) -> None:
        """Signal the child, or its whole process group as a terminal would."""
        if group:
            os.killpg(self.popen.pid, signum)
        else:
            self.popen.send_signal(signum)

    def finish(self, timeout_s: float = CHILD_TIMEOUT_S) -> Finished:
        """Wait for the exit; past ``timeout_s`` kill the whole tree and fail."""
        try:
            returncode = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            pytest.fail(
                f"{self.label} still running after {timeout_s} s; killed.\n"
                f"stderr:\n{self.stderr}\nstdout:\n{self.stdout}"
            )
        return Finished(returncode, self.stdout.join(), self.stderr.join())

    def kill_tree(self) -> None:
        """SIGKILL the child and every descendant, wherever their session."""
        pids = [self.popen.pid, *descendants(self.popen.pid)]
        for pid in pids:
            _kill_quietly(pid)
        self.popen.wait(SERVER_STOP_S)


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, read from /proc."""
    children: dict[int, list[int]] = {}
    for pid in _proc_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait until every pid has exited; return those still running at the end."""
    deadline = time.monotonic() + timeout_s
    left = []
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # already gone
        try:
            select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        finally:
            os.close(fd)
        if pid_alive(pid):
            left.append(pid)
    return left


def _proc_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def marked_processes(mark: str) -> dict[int, str]:
    """pid -> command line of every live process carrying ``mark``."""
    needle = f"{MARK_ENV}={mark}".encode()
    found = {}
    for pid in _proc_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(pid):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace")
    return found


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(autouse=True)
def process_mark() -> Iterator[str]:
    """A mark for this test's processes; fails the test if any outlive it."""
    mark = secrets.token_hex(8)
    yield mark
    left = marked_processes(mark)
    if not left:
        return
    still = wait_gone(list(left), LEFTOVER_WAIT_S)
    for pid in still:
        _kill_quietly(pid)
    if still:
        listing = "\n".join(f"  {pid}: {left[pid]}" for pid in still)
        pytest.fail(f"processes left behind by the test (killed now):\n{listing}")


@pytest.fixture
def child_env(process_mark: str) -> dict[str, str]:
    """The environment for a child: this test's mark, no inherited NATS settings.

    ``NATS_URL`` and ``NATS_TOKEN`` are removed so that ``scaler run``
    starts its embedded server unless a test says otherwise.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NATS_TOKEN")}
    env[MARK_ENV] = process_mark
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Spawner:
    """Starts children for one test and kills whatever is left at its end."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.children: list[Child] = []

    def __call__(
        self,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        label: str | None = None,
    ) -> Child:
        """Start ``argv``; ``env`` adds to (or overrides) the test's environment."""
        child = Child(argv, {**self.env, **(env or {})}, label or Path(argv[0]).name)
        self.children.append(child)
        return child

    def scaler(self, *args: str, env: dict[str, str] | None = None) -> Child:
        """Start ``python -m scaler ARGS``."""
        argv = [sys.executable, "-m", "scaler", *args]
        return self(argv, env, label=f"scaler {args[0] if args else ''}".strip())

    def run_scaler(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout_s: float = CHILD_TIMEOUT_S,
    ) -> Finished:
        """Run ``python -m scaler ARGS`` to its end, within ``timeout_s``."""
        return self.scaler(*args, env=env).finish(timeout_s)

    def kill_running(self) -> list[str]:
        """Kill every child still running; return their labels."""
        running = [c for c in self.children if c.popen.poll() is None]
        for child in running:
            child.kill_tree()
        return [c.label for c in running]


@pytest.fixture
def spawn(child_env: dict[str, str]) -> Iterator[Spawner]:
    """Start children with hard bounds; fails a test that leaves one running."""
    spawner = Spawner(child_env)
    yield spawner
    running = spawner.kill_running()
    if running:
        pytest.fail(f"still running at the end of the test (killed): {running}")


@dataclass
class NatsServer:
    """A real nats-server on loopback, with token authentication."""

    url: str
    token: str
    pid: int
    port: int

    @property
    def env(self) -> dict[str, str]:
        """``NATS_URL`` and ``NATS_TOKEN``: what scaler reads to reach it."""
        return {"NATS_URL": self.url, "NATS_TOKEN": self.token}


@pytest.fixture
def nats_server(spawn: Spawner, tmp_path: Path) -> Iterator[NatsServer]:
    """nats-server on a free port, chosen by the server (``-p -1``)."""
    binary = Path(sys.executable).parent / "nats-server"
    token = secrets.token_urlsafe(16)
    config = tmp_path / "nats.conf"
    config.write_text(f'authorization {{ token: "{token}" }}\n')
    child = spawn(
        [str(binary), "-a", "127.0.0.1", "-p", "-1", "-c", str(config)],
        label="nats-server",
    )
    listening = child.stderr.expect(_LISTENING.pattern, SERVER_READY_S)
    child.stderr.expect("Server is ready", SERVER_READY_S)
    host, port = listening[1], int(listening[2])
    yield NatsServer(f"nats://{host}:{port}", token, child.pid, port)
    child.send_signal(signal.SIGTERM)
    try:
        child.popen.wait(SERVER_STOP_S)
    except subprocess.TimeoutExpired:
        child.kill_tree()
        pytest.fail(f"nats-server ignored SIGTERM for {SERVER_STOP_S} s")
