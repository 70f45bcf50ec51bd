"""The worker: one process, one queue-group subscription, bounded concurrency.

Runs in its own interpreter, started by ``scaler run``, by a Procfile
manager or by hand.  It creates its own event loop, subscribes to the
subject in a queue group, and works at most ``limit`` messages at a time.

The bound is a fixed set of ``limit`` long-lived tasks taking messages
from a :class:`Backlog` of ``limit`` places, fed by the subscription's
callback.  That is the same "at most L in flight" as a semaphore around a
task per message, without creating a task and waiting on a semaphore for
every message.  When every task is busy and the backlog is full, the
callback waits, so the rest stays in the client's pending buffer, where
nats-py's slow consumer limits apply.

stdout carries only protocol records (see :mod:`scaler.protocol`);
logging goes to stderr.  On SIGTERM or SIGINT the worker stops taking
messages, finishes what it holds within ``GRACE_S``, writes its summary
and exits 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import resource
import socket
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from itertools import repeat
from operator import lshift, rshift, sub
from typing import TextIO

from hdrh.histogram import HdrHistogram
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import SlowConsumerError

from scaler import control, payload, protocol
from scaler.handler import Handler
from scaler.loop import on_stop_signals
from scaler.protocol import Counters, Progress, Ready, Summary
from scaler.server import close_quietly, connect
from scaler.workload import WorkSpec

log = logging.getLogger(__name__)

GRACE_S = 4.0  # to finish in-flight work; under honcho's and foreman's 5 s
PROGRESS_INTERVAL_S = 0.25
DONE_BATCH = 50_000  # messages a record reports done, at most: ~530 kB of base64
YIELD_EVERY_NS = 50_000_000  # 50 ms: the longest the serving tasks hold the loop
HISTOGRAM_MAX_US = 3_600_000_000  # one hour
HISTOGRAM_DIGITS = 3  # significant digits: 0.1 % resolution
QUANTUM_BITS = 11  # bits kept when rounding values for the histograms: 0.05 %

Work = Callable[[Msg, int], Awaitable[None]]  # what the consumer calls: message, seq


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


class Backlog:
    """Messages handed from the subscription's callback to the serving tasks.

    It holds at most ``size`` messages; ``put`` waits for room beyond
    that, and only one ``put`` may wait at a time: the subscription's
    callback, which nats-py calls for one message after another.
    Unlike an ``asyncio.Queue`` with every idle task blocked in ``get``, it
    does not wake one task per message: ``put`` wakes an idle task only
    when none is already on its way, and a task that finishes a message
    takes the next one without sleeping.  A woken task that finds more
    waiting wakes two others, so a burst of slow messages still gets every
    task busy within log2(limit) turns of the event loop.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.deque[tuple[payload.Stamped, Msg]] = (
            collections.deque()
        )
        self._idle: collections.deque[asyncio.Future[None]] = collections.deque()
        self._waking = 0  # idle tasks woken that have not run yet
        self._room: asyncio.Future[None] | None = None  # a put waiting for room

    async def put(self, item: tuple[payload.Stamped, Msg]) -> None:
        while len(self._items) >= self._size:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        self._items.append(item)
        if not self._waking:
            self._wake_one()

    async def get(self) -> tuple[payload.Stamped, Msg]:
        items = self._items
        if not items:
            while not items:
                waiter = asyncio.get_running_loop().create_future()
                self._idle.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter.done() and not waiter.cancelled():
                        self._waking -= 1  # woken, whether or not it runs on
            for _ in range(2):
                if len(items) > self._waking + 1:
                    self._wake_one()
        item = items.popleft()
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)
        return item

    def clear(self) -> None:
        """Drop every message held."""
        self._items.clear()

    def _wake_one(self) -> None:
        idle = self._idle
        while idle:
            waiter = idle.popleft()
            if not waiter.done():  # a cancelled task leaves a cancelled waiter
                self._waking += 1
                waiter.set_result(None)
                return


class Consumer:
    """Works one run's messages, at most ``limit`` at a time; keeps the books."""

    def __init__(self, run: str | None, limit: int, work: Work) -> None:
        self.run = run.encode() if run else None
        self.limit = limit
        self.counters = Counters()
        self.in_flight = 0
        self.service_s = 0.0
        self.first_done_ns = 0
        self.last_done_ns = 0
        self._work = work
        self._backlog = Backlog(limit)
        self._tasks: list[asyncio.Task[None]] = []
        self._yielded_ns = 0  # when a serving task last let the loop run
        self._closing = False  # set by finish(): start no more messages
        self._idle = asyncio.Event()  # set once closing and nothing is in flight
        self._seen = bytearray()  # 1 at index seq once seq is done here
        self._done = array("I")  # seq, service µs, seq, service µs, ...
        self._latency_us = array("q")
        self._wait_us = array("q")

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._serve()) for _ in range(self.limit)]

    async def on_message(self, msg: Msg) -> None:
        """The subscription's callback: sort, count, and hand over."""
        stamped = payload.decode(msg.data)
        if stamped is None or (self.run is not None and stamped.run != self.run):
            self.counters.foreign += 1
            return
        if self.run is None:
            self.run = stamped.run  # the first run seen is the one this worker serves
        self.counters.received += 1
        await self._backlog.put((stamped, msg))

    async def _serve(self) -> None:
        backlog, work, counters = self._backlog, self._work, self.counters
        while True:
            stamped, msg = await backlog.get()
            if self._closing:
                continue
            self.in_flight += 1
            started_ns = time.time_ns()
            try:
                await work(msg, stamped.seq)
            except Exception:
                counters.errors += 1
                log.debug("work raised on seq %d", stamped.seq, exc_info=True)
            finished_ns = time.time_ns()
            self.in_flight -= 1
            self._record(stamped, started_ns, finished_ns)
            if self._closing and not self.in_flight:
                self._idle.set()
            if finished_ns - self._yielded_ns > YIELD_EVERY_NS:
                # Work that never awaits would otherwise hold the loop for a
                # whole backlog: no reading from NATS, no progress records.
                self._yielded_ns = finished_ns
                await asyncio.sleep(0)

    def _record(
        self, stamped: payload.Stamped, started_ns: int, finished_ns: int
    ) -> None:
        seq = stamped.seq
        counters = self.counters
        counters.processed += 1
        seen = self._seen
        if seq >= len(seen):
            seen.extend(bytes(max(seq + 1 - len(seen), len(seen))))
        if seen[seq]:
            counters.duplicates += 1
            return
        seen[seq] = 1
        service_ns = finished_ns - started_ns
        self.service_s += service_ns / 1e9
        self._done.append(seq)
        self._done.append(min(service_ns // 1000, 0xFFFFFFFF))
        self._latency_us.append((finished_ns - stamped.sent_ns) // 1000)
        self._wait_us.append((started_ns - stamped.sent_ns) // 1000)
        if not self.first_done_ns:
            self.first_done_ns = finished_ns
        self.last_done_ns = finished_ns

    def take_done(self) -> list[str]:
        """The completions since the last call, encoded, one batch a record.

        At least one batch, perhaps empty; at most ``DONE_BATCH`` messages
        each, so that a record's copy on NATS stays under the server's
        1 MB payload limit.
        """
        done, self._done = self._done, array("I")
        step = 2 * DONE_BATCH
        batches = [done[i : i + step] for i in range(0, len(done), step)]
        return [protocol.encode_done(batch) for batch in batches] or [""]

    async def finish(self, sub: Subscription, grace_s: float) -> int:
        """Stop taking messages; finish those in flight within ``grace_s``.

        Messages delivered but not yet started, in our queue or in the
        client's pending buffer, are abandoned, as is whatever is still
        in flight when the grace period runs out.  Returns how many.
        """
        self._closing = True
        pending = sub.pending_msgs
        with contextlib.suppress(Exception):  # a lost connection is no obstacle
            await sub.unsubscribe()  # nats-py discards its pending buffer
        self._backlog.clear()
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.counters.received - self.counters.processed + pending

    def histograms(self) -> tuple[str, str]:
        """Latency and wait, as encoded HdrHistograms (µs)."""
        return _histogram(self._latency_us), _histogram(self._wait_us)


def _histogram(values: array[int]) -> str:
    """An encoded HdrHistogram of ``values`` (µs), built in bulk.

    Recording a million values one by one takes over a second, too long
    for a summary written while a process manager waits to kill us.  So
    each value is first rounded down to ``QUANTUM_BITS`` significant bits,
    finer than the histogram's own buckets, which leaves few distinct
    values; those are counted at C speed and recorded once each.
    """
    histogram = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
    shifts = list(
        map(max, map(sub, map(int.bit_length, values), repeat(QUANTUM_BITS)), repeat(0))
    )
    rounded = Counter(map(lshift, map(rshift, values, shifts), shifts))
    for value, count in rounded.items():
        histogram.record_value(min(max(value, 1), HISTOGRAM_MAX_US), count)
    encoded: bytes = histogram.encode()
    return encoded.decode("ascii")


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
        await nc.publish(control.HELLO, protocol.encode(self.ready_record()).encode())
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
