"""Bounded concurrency inside one subscription: the worker's hot path.

The bound is a fixed set of ``limit`` long-lived tasks taking messages
from a :class:`Backlog` of ``limit`` places, fed by the subscription's
callback.  That is the same "at most L in flight" as a semaphore around a
task per message, without creating a task and waiting on a semaphore for
every message.  When every task is busy and the backlog is full, the
callback waits, so the rest stays in the client's pending buffer, where
nats-py's slow consumer limits apply.

Runs in a worker process, on its event loop; nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable
from itertools import repeat
from operator import lshift, rshift, sub

from hdrh.histogram import HdrHistogram
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from scaler import payload, protocol
from scaler.protocol import Counters

log = logging.getLogger(__name__)

DONE_BATCH = 50_000  # messages a record reports done, at most: ~530 kB of base64
YIELD_EVERY_NS = 50_000_000  # 50 ms: the longest the serving tasks hold the loop
HISTOGRAM_MAX_US = 3_600_000_000  # one hour
HISTOGRAM_DIGITS = 3  # significant digits: 0.1 % resolution
QUANTUM_BITS = 11  # bits kept when rounding values for the histograms: 0.05 %

Work = Callable[[Msg, int], Awaitable[None]]  # what the consumer calls: message, seq


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
        if (
            stamped is None
            or (self.run is not None and stamped.run != self.run)
            or stamped.seq >= payload.MAX_MESSAGES
        ):
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

        Messages delivered but not yet started, in the backlog or in the
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
