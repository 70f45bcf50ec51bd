"""The worker's in-process parts, on an event loop of their own, without NATS.

The consumer's bound and bookkeeping, the summary's histograms, and the
rule that decides when a run is over.
"""

from __future__ import annotations

import asyncio
import random
import time
from array import array

import pytest
from hdrh.histogram import HdrHistogram
from nats.aio.msg import Msg

from scaler import consumer as consumer_module
from scaler import payload, protocol
from scaler.consumer import HISTOGRAM_DIGITS, HISTOGRAM_MAX_US, Consumer, _histogram
from scaler.protocol import Counters, Progress
from scaler.stats import Ledger, WorkerOutcome
from scaler.tracking import QUIESCE_S, Outcome, wait_until_done

RUN = "feedbeef"
LOOP_TIMEOUT_S = 10.0  # bound on each test's event loop


def message(seq: int, run: str = RUN) -> Msg:
    data = payload.encode(run.encode(), seq, time.time_ns(), b"hello %d" % seq)
    return Msg(_client=None, subject="greet.joe", data=data)  # type: ignore[arg-type]


def run_bounded(coro: object) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, LOOP_TIMEOUT_S)  # type: ignore[arg-type]

    asyncio.run(bounded())


class Gauge:
    """Work that records how many messages were in it at once."""

    def __init__(self, pause: asyncio.Event | None = None, expect: int = 0) -> None:
        self.now = 0
        self.most = 0
        self.seen: list[int] = []
        self.pause = pause
        self.expect = expect
        self.all_seen = asyncio.Event()  # set once ``expect`` messages are done

    async def __call__(self, msg: Msg, seq: int) -> None:
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            if self.pause is not None:
                await self.pause.wait()
            else:
                await asyncio.sleep(random.uniform(0, 0.002))
            self.seen.append(seq)
            if len(self.seen) == self.expect:
                self.all_seen.set()
        finally:
            self.now -= 1


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_the_consumer_works_every_message_with_at_most_limit_in_flight(
    limit: int,
) -> None:
    async def main() -> None:
        consumer = Consumer(RUN, limit, gauge)
        consumer.start()
        for seq in range(400):
            await consumer.on_message(message(seq))
        await gauge.all_seen.wait()
        # The last message is booked in the same step that set the event.
        assert consumer.counters.processed == 400
        (batch,) = consumer.take_done()
        done = protocol.decode_done(batch)
        assert sorted(done[0::2]) == list(range(400))

    gauge = Gauge(expect=400)
    run_bounded(main())
    assert gauge.most == limit
    assert sorted(gauge.seen) == list(range(400))


def test_foreign_and_other_runs_messages_are_counted_not_worked() -> None:
    gauge = Gauge()

    async def main() -> Consumer:
        consumer = Consumer(RUN, 2, gauge)
        consumer.start()
        await consumer.on_message(message(0, run="0badc0de"))
        await consumer.on_message(Msg(_client=None, data=b"garbage"))  # type: ignore[arg-type]
        await consumer.on_message(message(payload.MAX_MESSAGES))  # past any books
        await consumer.on_message(message(1))
        return consumer

    consumer = asyncio.run(main())
    assert consumer.counters.foreign == 3
    assert consumer.counters.received == 1


def test_finish_abandons_what_waits_and_lets_in_flight_work_end() -> None:
    release = asyncio.Event()
    gauge = Gauge(pause=release)

    class Subscription:
        pending_msgs = 5

        async def unsubscribe(self) -> None:
            release.set()  # the in-flight work may now end

    async def main() -> int:
        consumer = Consumer(RUN, 2, gauge)
        consumer.start()
        for seq in range(4):  # two in flight, two waiting in the backlog
            await consumer.on_message(message(seq))
        return await consumer.finish(Subscription(), grace_s=5.0)  # type: ignore[arg-type]

    abandoned = 0

    async def bounded() -> None:
        nonlocal abandoned
        abandoned = await asyncio.wait_for(main(), LOOP_TIMEOUT_S)

    asyncio.run(bounded())
    assert sorted(gauge.seen) == [0, 1]
    assert abandoned == 2 + 5  # the backlog's two and the client's five


def test_bulk_histograms_match_recording_one_value_at_a_time() -> None:
    rng = random.Random(7)
    values = array("q", (int(rng.expovariate(1 / 50_000)) for _ in range(20_000)))
    one_by_one = HdrHistogram(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
    for value in values:
        one_by_one.record_value(min(max(value, 1), HISTOGRAM_MAX_US))

    bulk = HdrHistogram.decode(_histogram(values).encode())

    assert bulk.get_total_count() == len(values)
    for p in (1, 50, 90, 99, 99.9, 100):
        assert bulk.get_value_at_percentile(p) == one_by_one.get_value_at_percentile(p)


def idle_progress(received: int) -> Progress:
    counters = Counters(received=received, processed=received)
    return Progress(worker="w", run=RUN, counters=counters)


def test_a_silent_worker_is_not_taken_for_an_idle_one() -> None:
    """Its last word was "idle", but it has said nothing since: wait on."""
    worker = WorkerOutcome("w", 1, progress=idle_progress(1))

    async def main() -> Outcome:
        ledger = Ledger(published=2)
        return await wait_until_done(
            ledger, [worker], alive=lambda w: True, changed=asyncio.Event(),
            timeout_s=QUIESCE_S * 2.5,
        )  # fmt: skip

    assert asyncio.run(main()) is Outcome.TIMEOUT


def test_a_worker_that_keeps_reporting_idle_ends_the_run_as_quiescent() -> None:
    worker = WorkerOutcome("w", 1)

    async def report(ledger: Ledger, changed: asyncio.Event) -> None:
        while True:
            worker.accept(idle_progress(1), ledger, 0)
            changed.set()
            await asyncio.sleep(0.1)  # the worker's own reporting interval

    async def main() -> Outcome:
        ledger = Ledger(published=2)
        changed = asyncio.Event()
        reporter = asyncio.create_task(report(ledger, changed))
        try:
            return await wait_until_done(
                ledger, [worker], alive=lambda w: True, changed=changed,
                timeout_s=QUIESCE_S * 5,
            )  # fmt: skip
        finally:
            reporter.cancel()

    assert asyncio.run(main()) is Outcome.QUIESCENT


def test_completions_are_reported_in_batches_small_enough_for_nats(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(consumer_module, "DONE_BATCH", 3)
    gauge = Gauge(expect=8)

    async def main() -> list[str]:
        consumer = Consumer(RUN, 4, gauge)
        consumer.start()
        for seq in range(8):
            await consumer.on_message(message(seq))
        await gauge.all_seen.wait()
        return consumer.take_done()

    batches = asyncio.run(main())
    sizes = [len(protocol.decode_done(batch)) // 2 for batch in batches]
    assert sizes == [3, 3, 2]
    seqs = [s for b in batches for s in protocol.decode_done(b)[0::2]]
    assert sorted(seqs) == list(range(8))
