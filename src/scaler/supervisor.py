"""The supervisor behind ``scaler run``: workers, workload, and when to stop.

For each strategy it spawns fresh worker processes, waits until every
one is subscribed, publishes the workload, follows the workers' stdout
records until every message is accounted for, then stops the workers and
turns what they reported into a :class:`~scaler.stats.RunResult`.

Stopping is a ladder: SIGTERM, then ``STOP_WAIT_S`` for the worker to
finish in-flight work and write its summary, then SIGKILL.  Signals sent
to the supervisor only record that they came; the main coroutine decides
what to do.  Workers run in their own session, so a Ctrl-C reaches only
the supervisor, and each worker also stops by itself when its parent
process goes away.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client

from scaler import payload, protocol
from scaler.errors import ExitCode, WorkerStartError
from scaler.loop import on_stop_signals
from scaler.protocol import Progress, ProtocolError, Ready, Summary
from scaler.publisher import publish
from scaler.server import (
    TOKEN_ENV,
    URL_ENV,
    close_quietly,
    connect,
    embedded_server,
    redact,
    stop_process,
)
from scaler.stats import Ledger, RunResult, WorkerOutcome, summarize
from scaler.tracking import Outcome, wait_changed, wait_until_done
from scaler.worker import GRACE_S
from scaler.workload import WorkSpec

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 20.0  # from spawn to "ready", for every worker at once
STOP_WAIT_S = GRACE_S + 2.0  # SIGTERM -> SIGKILL, past the worker's own grace
STDERR_TAIL = 20  # lines of a worker's stderr kept for error messages
LINE_LIMIT = 256 * 1024 * 1024  # bytes: a summary's done batch can be large


@dataclass(frozen=True)
class Strategy:
    name: str
    procs: int
    limit: int


STRATEGY_NAMES = ("sequential", "queue-group", "in-subscription", "combined")
DEFAULT_STRATEGIES = ("queue-group", "in-subscription", "combined")


def make_strategies(names: Sequence[str], procs: int, limit: int) -> list[Strategy]:
    """The named strategies, in the order given, sized by procs and limit."""
    shapes = {
        "sequential": (1, 1),
        "queue-group": (procs, 1),
        "in-subscription": (1, limit),
        "combined": (procs, limit),
    }
    return [Strategy(name, *shapes[name]) for name in names]


@dataclass(frozen=True)
class Workload:
    """What every strategy of one ``scaler run`` processes."""

    messages: int
    work: WorkSpec
    subject: str = "greet.*"
    publish_subject: str = "greet.joe"
    queue: str = "scaler"
    timeout_s: float = 300.0
    loop: str = "uvloop"
    handler: str | None = None  # module:function run instead of ``work``
    rate: float = 0.0  # messages a second to publish at; 0: all at once

    @property
    def work_text(self) -> str:
        """What the workers do, in words for reports."""
        return f"handler {self.handler}" if self.handler else str(self.work)

    def describe(self, server_url: str | None) -> dict[str, Any]:
        """The ``workload`` object of the JSON documents."""
        return {
            "messages": self.messages,
            "work": self.work_text,
            "subject": self.subject,
            "publish_subject": self.publish_subject,
            "server": redact(server_url) if server_url else "embedded",
            "loop": self.loop,
            "timeout_s": self.timeout_s,
            "rate": self.rate,
            "cpus": os.cpu_count(),
        }


class Display(Protocol):
    """Where the supervisor shows progress; see scaler.report."""

    def start(self, strategy: Strategy, total: int) -> None: ...
    def update(self, processed: int) -> None: ...
    def stop(self) -> None: ...


class WorkerProcess:
    """One worker child: its process, its pipes and what it reported."""

    def __init__(self, index: int, name: str, limit: int, run: Run) -> None:
        self.index = index
        self.outcome = WorkerOutcome(name=name, limit=limit)
        self.ready = asyncio.Event()
        self.exited = asyncio.Event()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.process: asyncio.subprocess.Process | None = None
        self._run = run
        self._readers: list[asyncio.Task[None]] = []
        self._stopping = False  # set once we stop it: its exit is ours

    @property
    def name(self) -> str:
        return self.outcome.name

    async def start(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            limit=LINE_LIMIT,
            start_new_session=True,
        )
        self.outcome.pid = self.process.pid
        log.info("%s started (pid=%d)", self.name, self.process.pid)
        self._readers = [
            asyncio.create_task(self._read_records()),
            asyncio.create_task(self._read_stderr()),
        ]

    async def _read_records(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", errors="replace")
            try:
                record = protocol.decode(line)
            except ProtocolError as exc:
                log.warning("%s: %s", self.name, exc)
                continue
            if record is None:
                log.warning("%s wrote a line that is not a record", self.name)
                continue
            self._accept(record)
        returncode = await self.process.wait()
        self.outcome.exit_code = returncode
        self.exited.set()
        self._run.changed.set()
        if self.outcome.summary is None and not self._stopping:
            log.warning("%s exited (rc=%d) without a summary", self.name, returncode)
        elif self.outcome.summary is None:
            log.info("%s stopped (rc=%d) before its summary", self.name, returncode)
        else:
            log.info("%s stopped (rc=%d)", self.name, returncode)

    def _accept(self, record: protocol.Record) -> None:
        outcome = self.outcome
        if isinstance(record, Ready):
            outcome.host = record.host
            self.ready.set()
        elif isinstance(record, Progress | Summary):
            outcome.accept(record, self._run.ledger, self.index)
        self._run.changed.set()

    async def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", errors="replace").rstrip()
            self.stderr_tail.append(line)
            log.debug("%s: %s", self.name, line)

    async def stop(self) -> None:
        """SIGTERM, the grace wait, SIGKILL; then read its pipes to the end."""
        self._stopping = True
        if self.process is not None:
            await stop_process(self.process, self.name, STOP_WAIT_S)
        await asyncio.gather(*self._readers, return_exceptions=True)


class Run:
    """The shared state of one strategy's run: its ledger and a change signal."""

    def __init__(self, strategy: Strategy, messages: int) -> None:
        self.strategy = strategy
        self.id = payload.new_run_id()
        self.ledger = Ledger(messages)
        self.changed = asyncio.Event()  # set on every record, exit and signal


class Supervisor:
    """Runs strategies one after another against one NATS server."""

    def __init__(
        self,
        nc: Client,
        server_env: dict[str, str],
        workload: Workload,
        display: Display | None = None,
    ) -> None:
        self.nc = nc
        self.server_env = server_env
        self.workload = workload
        self.display = display
        self.signal: int | None = None  # the signal that interrupted us
        self._run: Run | None = None

    def install_signal_handlers(self) -> None:
        on_stop_signals(self._on_signal)

    def _on_signal(self, signum: int) -> None:
        self.signal = signum
        if self._run is not None:
            self._run.changed.set()

    async def run_all(self, strategies: Sequence[Strategy]) -> list[RunResult]:
        """Run each strategy with fresh workers; stop early on a signal."""
        results = []
        for strategy in strategies:
            if self.signal is not None:
                break
            results.append(await self.run_one(strategy))
        return results

    async def run_one(self, strategy: Strategy) -> RunResult:
        workload = self.workload
        run = self._run = Run(strategy, workload.messages)
        workers = [
            WorkerProcess(i, f"{strategy.name}.{i + 1}", strategy.limit, run)
            for i in range(strategy.procs)
        ]
        started_ns = time.time_ns()
        outcome = Outcome.INTERRUPTED
        try:
            env = {**os.environ, **self.server_env}
            for worker in workers:
                await worker.start(self._worker_argv(worker, run), env)
            if not await self._wait_ready(run, workers):
                run.ledger.published = 0
            else:
                if self.display is not None:
                    self.display.start(strategy, workload.messages)
                published = await publish(
                    self.nc,
                    workload.publish_subject,
                    run.id,
                    workload.messages,
                    should_stop=lambda: self.signal is not None,
                    rate=workload.rate,
                )
                started_ns = published.started_ns
                run.ledger.published = published.count
                log.info("%s: published %d messages", strategy.name, published.count)
                outcome = await self._wait_done(run, workers)
        finally:
            stopped_ns = time.time_ns()
            if self.display is not None:
                self.display.stop()
            await asyncio.gather(*(w.stop() for w in workers))
            self._run = None
        if outcome is not Outcome.COMPLETE:
            log.warning(
                "%s ended %s: %d lost", strategy.name, outcome.value, run.ledger.lost
            )
        return summarize(
            strategy.name,
            strategy.procs,
            strategy.limit,
            run.ledger,
            [w.outcome for w in workers],
            started_ns,
            stopped_ns,
            timed_out=outcome is Outcome.TIMEOUT,
            interrupted=outcome is Outcome.INTERRUPTED,
            rate=workload.rate,
        )

    def _worker_argv(self, worker: WorkerProcess, run: Run) -> list[str]:
        workload = self.workload
        return [
            sys.executable,
            "-m",
            "scaler",
            "worker",
            "--name",
            worker.name,
            "--subject",
            workload.subject,
            # A queue group of its own keeps concurrent runs on one server apart.
            "--queue",
            f"{workload.queue}-{run.id}",
            "--limit",
            str(run.strategy.limit),
            "--work",
            str(workload.work),
            "--run",
            run.id,
            "--loop",
            workload.loop,
            "--parent-pid",
            str(os.getpid()),
            *(["--handler", workload.handler] if workload.handler else []),
        ]

    async def _wait_ready(self, run: Run, workers: list[WorkerProcess]) -> bool:
        """True once every worker is ready; False on a signal.

        Raises WorkerStartError when a worker exits first, or time runs out.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while not all(w.ready.is_set() for w in workers):
            if self.signal is not None:
                return False
            for worker in workers:
                if worker.exited.is_set() and not worker.ready.is_set():
                    raise WorkerStartError(self._start_failure(worker))
            remaining = deadline - loop.time()
            if remaining <= 0:
                late = ", ".join(w.name for w in workers if not w.ready.is_set())
                raise WorkerStartError(
                    f"not ready within {READY_TIMEOUT_S:g} s: {late}"
                )
            await wait_changed(run.changed, remaining)
        return True

    def _start_failure(self, worker: WorkerProcess) -> str:
        last = " | ".join(line for line in list(worker.stderr_tail)[-3:] if line)
        code = worker.outcome.exit_code
        message = f"{worker.name} exited with code {code} before it was ready"
        return f"{message}: {last}" if last else message

    async def _wait_done(self, run: Run, workers: list[WorkerProcess]) -> Outcome:
        display = self.display
        return await wait_until_done(
            run.ledger,
            [w.outcome for w in workers],
            alive=lambda outcome: outcome.exit_code is None,
            changed=run.changed,
            timeout_s=self.workload.timeout_s,
            interrupted=lambda: self.signal is not None,
            on_change=display.update if display is not None else lambda n: None,
        )


async def measure(
    server_url: str | None,
    workload: Workload,
    strategies: Sequence[Strategy],
    display: Display | None = None,
) -> tuple[list[RunResult], int | None]:
    """Run ``strategies`` on ``server_url``, or on an embedded server.

    Returns the results and the signal that cut the run short, if any.
    """
    async with contextlib.AsyncExitStack() as stack:
        if server_url:
            url, token = server_url, os.environ.get(TOKEN_ENV)
            env = {URL_ENV: url}
        else:
            embedded = await stack.enter_async_context(embedded_server())
            url, token, env = embedded.url, embedded.token, embedded.env
        nc = await connect(url, token, name="scaler-run")
        stack.push_async_callback(close_quietly, nc)
        supervisor = Supervisor(nc, env, workload, display)
        supervisor.install_signal_handlers()
        results = await supervisor.run_all(strategies)
        return results, supervisor.signal
    raise AssertionError("unreachable")  # pragma: no cover


def exit_code(results: Sequence[RunResult], signum: int | None) -> ExitCode:
    """The exit code policy of ``scaler run`` and ``scaler sweep``."""
    if signum is not None:
        return ExitCode(128 + signum)
    if any(r.lost or r.dead_workers for r in results):
        return ExitCode.LOST
    return ExitCode.OK
