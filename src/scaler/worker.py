"""The worker: one process, one queue-group subscription, bounded concurrency.

Runs in its own interpreter, started by ``scaler run``, by a Procfile
manager or by hand.  It creates its own event loop, subscribes to the
subject in a queue group, and works at most ``limit`` messages at a time
(see :mod:`scaler.consumer` for how the bound is built).

stdout carries only protocol records (see :mod:`scaler.protocol`);
logging goes to stderr.  On SIGTERM or SIGINT the worker stops taking
messages, finishes what it holds within ``GRACE_S``, writes its summary
and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TextIO

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from scaler import control, payload, protocol
from scaler.consumer import Consumer, Work
from scaler.handler import Handler
from scaler.loop import on_stop_signals
from scaler.protocol import Progress, Ready, Summary
from scaler.server import close_quietly, connect
from scaler.workload import WorkSpec

log = logging.getLogger(__name__)

GRACE_S = 4.0  # to finish in-flight work; under honcho's and foreman's 5 s
PROGRESS_INTERVAL_S = 0.25


@dataclass(frozen=True)
class WorkerConfig:
    name: str
    server: str
    token: str | None
    subject: str
    queue: str
    limit: int
    work: WorkSpec
    run: str | None = None  # None: take any run's messages
    parent_pid: int | None = None  # stop when this process goes away


class Channel:
    """Where records go: the real stdout, one flushed line a record.

    Once it is opened, file descriptor 1 and ``sys.stdout`` point at
    stderr, so a stray ``print`` cannot corrupt the channel.  Once a NATS
    connection is attached, each record is also published on the records
    control subject, for a ``scaler load`` that shares no pipe with us.
    """

    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._nc: Client | None = None

    def attach(self, nc: Client) -> None:
        self._nc = nc

    async def send(self, record: protocol.Record) -> None:
        line = protocol.encode(record)
        self._out.write(line + "\n")
        self._out.flush()
        if self._nc is not None and not self._nc.is_closed:
            try:
                await self._nc.publish(control.RECORDS, line.encode())
            except Exception as exc:  # the stdout copy is the one that counts
                log.warning("cannot publish a %s record: %s", record.kind, exc)


def builtin_work(work: WorkSpec) -> Work:
    """The message's cost as ``work`` describes it."""

    def perform(msg: Msg, seq: int) -> Awaitable[None]:
        return work.perform(seq)  # the coroutine itself: no wrapper to await

    return perform


def user_work(handler: Handler) -> Work:
    """A user's handler, given the message with scaler's header removed."""

    async def call(msg: Msg, seq: int) -> None:
        msg.data = payload.body(msg.data)
        await handler(msg)

    return call


class Worker:
    """One worker process's life: connect, subscribe, serve, summarize."""

    def __init__(self, config: WorkerConfig, work: Work) -> None:
        self.config = config
        self.consumer = Consumer(config.run, config.limit, work)
        self.channel = Channel()
        self.host = socket.gethostname()
        self.stop = asyncio.Event()  # set by a signal, a finish message or orphaning
        self.signalled = asyncio.Event()
        self.finished_by_load = False

    def _on_signal(self, signum: int | None = None) -> None:
        self.signalled.set()
        self.stop.set()

    @property
    def run_id(self) -> str:
        return (self.consumer.run or b"").decode()

    def ready_record(self) -> Ready:
        config = self.config
        return Ready(
            config.name,
            os.getpid(),
            self.run_id,
            config.limit,
            self.host,
            str(config.work),
        )

    async def main(self) -> int:
        """Serve until told to stop; returns the process exit code."""
        config, consumer = self.config, self.consumer
        on_stop_signals(self._on_signal)
        nc = await connect(
            config.server,
            config.token,
            name=config.name,
            patient=True,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
        )
        consumer.start()
        sub = await nc.subscribe(
            config.subject, queue=config.queue, cb=consumer.on_message
        )
        await self._subscribe_control(nc)
        await nc.flush()
        self.channel.attach(nc)
        await self.channel.send(self.ready_record())
        log.info("%s ready (pid=%d, limit=%d)", config.name, os.getpid(), config.limit)

        reporter = asyncio.create_task(self._report(sub))
        await self.stop.wait()
        log.info("%s stopping", config.name)
        abandoned = await consumer.finish(sub, GRACE_S)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        *earlier, last = consumer.take_done()
        for done in earlier:
            await self.channel.send(self._progress(sub, done))
        await self.channel.send(self._summary(abandoned, last))
        if abandoned:
            log.warning("%s abandoned %d messages at shutdown", config.name, abandoned)
        if self.finished_by_load and not self.signalled.is_set():
            # Under a Procfile manager the first process to exit ends them all,
            # and its exit code becomes the manager's: leave that to the publisher.
            log.info("%s finished; waiting to be stopped", config.name)
            await self.signalled.wait()
        await close_quietly(nc, GRACE_S)
        log.info("%s stopped", config.name)
        return 0

    async def _subscribe_control(self, nc: Client) -> None:
        async def on_ping(msg: Msg) -> None:
            await msg.respond(protocol.encode(self.ready_record()).encode())

        async def on_start(msg: Msg) -> None:
            run = control.read_run(msg.data)
            if run and self.consumer.run is None:
                self.consumer.run = run.encode()
                log.info("%s serving run %s", self.config.name, run)

        async def on_finish(msg: Msg) -> None:
            run = control.read_run(msg.data)
            if run and run == self.run_id:
                self.finished_by_load = True
                self.stop.set()

        await nc.subscribe(control.PING, cb=on_ping)
        await nc.subscribe(control.START, cb=on_start)
        await nc.subscribe(control.FINISH, cb=on_finish)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            self.consumer.counters.slow_consumer += 1
        else:
            level = logging.INFO if self.stop.is_set() else logging.WARNING
            log.log(level, "%s: NATS error: %s", self.config.name, exc)

    async def _on_disconnect(self) -> None:
        # While serving, a disconnect may mean the server cut off a slow
        # consumer, which loses messages; after stopping, it is expected.
        level = logging.INFO if self.stop.is_set() else logging.WARNING
        log.log(level, "%s: disconnected from NATS", self.config.name)

    async def _report(self, sub: Subscription) -> None:
        """Send a progress record every PROGRESS_INTERVAL_S; watch the parent."""
        config = self.config
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            for done in self.consumer.take_done():
                await self.channel.send(self._progress(sub, done))
            if config.parent_pid is not None and os.getppid() != config.parent_pid:
                log.warning("%s: parent process went away; stopping", config.name)
                self._on_signal()

    def _progress(self, sub: Subscription, done: str) -> Progress:
        consumer = self.consumer
        return Progress(
            worker=self.config.name,
            run=self.run_id,
            counters=consumer.counters,
            in_flight=consumer.in_flight,
            pending=sub.pending_msgs,
            done=done,
            last_done_ns=consumer.last_done_ns,
            host=self.host,
        )

    def _summary(self, abandoned: int, done: str) -> Summary:
        consumer = self.consumer
        cpu_s = time.process_time()  # before the histograms: they are not the work
        latency, wait = consumer.histograms()
        return Summary(
            worker=self.config.name,
            pid=os.getpid(),
            run=self.run_id,
            counters=consumer.counters,
            limit=self.config.limit,
            abandoned=abandoned,
            done=done,
            first_done_ns=consumer.first_done_ns,
            last_done_ns=consumer.last_done_ns,
            service_s=consumer.service_s,
            latency_us=latency,
            wait_us=wait,
            cpu_s=cpu_s,
            max_rss_mb=_max_rss_mb(),
            host=self.host,
        )


async def run(config: WorkerConfig, handler: Handler | None = None) -> int:
    """The worker process's main coroutine; returns its exit code."""
    work = user_work(handler) if handler else builtin_work(config.work)
    return await Worker(config, work).main()


def _max_rss_mb() -> float:
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return max_rss / (1024 * 1024) if sys.platform == "darwin" else max_rss / 1024
