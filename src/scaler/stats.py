"""Accounting and statistics for one run, from the workers' records.

Pure functions and plain data: no I/O, no event loop.  The supervisor
(``scaler run``) and the log reader (``scaler report``) both feed the
records they collected through :func:`summarize`.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from typing import Any

from hdrh.histogram import HdrHistogram

from scaler import protocol
from scaler.protocol import Progress, Summary

PERCENTILES = (50, 90, 99)


class Ledger:
    """End-to-end accounting of one run's messages, by sequence number.

    Loss is what was published and never reported done by any worker:
    it covers client-side drops, a dead worker's queue and anything the
    server dropped, none of which the workers' own counters can see.
    """

    def __init__(self, published: int) -> None:
        self.published = published
        self.processed = 0
        self.duplicates = 0
        self.unknown = 0  # done reports for sequence numbers never published
        self._service_us = array("I", bytes(4 * published))  # µs + 1; 0: not done
        self._owner = array("H", bytes(2 * published))  # worker index + 1

    def add(self, worker: int, done: array[int]) -> None:
        """Record a batch of (seq, service µs) pairs done by ``worker``."""
        service, owner, published = self._service_us, self._owner, self.published
        for seq, us in zip(done[0::2], done[1::2], strict=True):
            if seq >= published:
                self.unknown += 1
            elif service[seq]:
                self.duplicates += 1
            else:
                service[seq] = min(us + 1, 0xFFFFFFFF)
                owner[seq] = worker + 1
                self.processed += 1

    @property
    def lost(self) -> int:
        return self.published - self.processed

    def jobs(self, worker: int | None = None) -> list[tuple[int, float]]:
        """(seq, service time in s) of the messages done, in publish order."""
        wanted = None if worker is None else worker + 1
        return [
            (seq, (us - 1) / 1e6)
            for seq, (us, who) in enumerate(
                zip(self._service_us, self._owner, strict=True)
            )
            if us and (wanted is None or who == wanted)
        ]

    def count_by_worker(self, workers: int) -> list[int]:
        counts = [0] * (workers + 1)
        for who in self._owner:
            counts[who] += 1
        return counts[1:]


def makespan(
    service_s: Iterable[float], slots: int, arrivals_s: Iterable[float] | None = None
) -> float:
    """Wall time of a perfect dispatcher with ``slots`` slots and no overhead.

    Messages are taken in order; each goes to the slot that frees first,
    but not before it arrives (``arrivals_s``: all at once when None).
    """
    free_at = [0.0] * max(slots, 1)
    arrivals = repeat(0.0) if arrivals_s is None else arrivals_s
    for cost, arrival in zip(service_s, arrivals, strict=False):  # repeat: endless
        heapq.heapreplace(free_at, max(free_at[0], arrival) + cost)
    return max(free_at)


def ideal_wall_s(jobs: Sequence[tuple[int, float]], slots: int, rate: float) -> float:
    """``makespan`` of (seq, cost) jobs published at ``rate`` a second (0: at once)."""
    if not jobs:
        return 0.0
    arrivals = [seq / rate for seq, _ in jobs] if rate else None
    return makespan([cost for _, cost in jobs], slots, arrivals)


def merge_histograms(encoded: Iterable[str]) -> HdrHistogram | None:
    merged: HdrHistogram | None = None
    for text in encoded:
        if not text:
            continue
        histogram = HdrHistogram.decode(text.encode("ascii"))
        if merged is None:
            merged = histogram
        else:
            merged.add(histogram)
    return merged


def percentiles_ms(histogram: HdrHistogram | None) -> dict[str, float | None]:
    """p50, p90, p99 and max in milliseconds; None where nothing was recorded."""
    keys = [f"p{p}" for p in PERCENTILES] + ["max"]
    if histogram is None or histogram.get_total_count() == 0:
        return dict.fromkeys(keys)
    values = [histogram.get_value_at_percentile(p) for p in PERCENTILES]
    values.append(histogram.get_max_value())
    return {key: round(us / 1000, 3) for key, us in zip(keys, values, strict=True)}


@dataclass
class WorkerOutcome:
    """What one worker reported, however it ended."""

    name: str
    limit: int
    pid: int | None = None
    host: str = ""
    exit_code: int | None = None
    summary: Summary | None = None
    progress: Progress | None = None  # the latest one
    reports: int = 0  # progress and summary records accepted so far

    def accept(self, record: Progress | Summary, ledger: Ledger, index: int) -> None:
        """Take in a record from this worker, the ``index``-th of its run."""
        ledger.add(index, protocol.decode_done(record.done))
        if isinstance(record, Progress):
            self.progress = record
        else:
            self.summary = record
            self.limit = record.limit
        self.reports += 1

    @property
    def died(self) -> bool:
        """True when the worker ended without writing its summary."""
        return self.summary is None

    @property
    def counters(self) -> protocol.Counters:
        if self.summary is not None:
            return self.summary.counters
        if self.progress is not None:
            return self.progress.counters
        return protocol.Counters()

    @property
    def busy(self) -> bool:
        """Holds messages, by its latest progress record."""
        progress = self.progress
        if progress is None:
            return False
        counters = progress.counters
        return bool(
            progress.in_flight
            or progress.pending
            or counters.received > counters.processed
        )

    @property
    def last_done_ns(self) -> int:
        if self.summary is not None:
            return self.summary.last_done_ns
        return self.progress.last_done_ns if self.progress is not None else 0


@dataclass
class ProcessStats:
    name: str
    pid: int | None
    host: str
    processed: int
    cpu_s: float | None
    max_rss_mb: float | None
    exit_code: int | None
    died: bool
    abandoned: int
    foreign: int
    errors: int
    slow_consumer: int


@dataclass
class RunResult:
    """One strategy's outcome; its fields are the JSON document's ``runs`` items."""

    strategy: str
    procs: int
    limit: int
    published: int
    processed: int
    lost: int
    duplicates: int
    foreign: int
    errors: int
    slow_consumer: int
    wall_s: float
    ideal_wall_s: float
    distributed_wall_s: float
    throughput: float
    effective_concurrency: float
    efficiency: float
    latency_ms: dict[str, float | None]
    wait_ms: dict[str, float | None]
    spread: dict[str, float]
    cpu_s: float
    max_rss_mb: float
    processes: list[ProcessStats]
    dead_workers: list[str] = field(default_factory=list)
    timed_out: bool = False
    interrupted: bool = False

    @property
    def slots(self) -> int:
        return self.procs * self.limit

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(
    strategy: str,
    procs: int,
    limit: int,
    ledger: Ledger,
    outcomes: Sequence[WorkerOutcome],
    started_ns: int,
    stopped_ns: int,
    *,
    timed_out: bool = False,
    interrupted: bool = False,
    rate: float = 0.0,
) -> RunResult:
    """Turn the ledger and the workers' outcomes into one RunResult.

    ``started_ns`` is when the first message was published; the run's wall
    time ends at the last completion any worker reported, or at
    ``stopped_ns`` when nothing completed.  ``rate`` is the pace messages
    were published at, per second; 0 means all at once.
    """
    last_done = max((o.last_done_ns for o in outcomes), default=0)
    end_ns = last_done if last_done > started_ns else stopped_ns
    wall_s = max((end_ns - started_ns) / 1e9, 1e-9)

    jobs = ledger.jobs()
    service_total = sum(cost for _, cost in jobs)
    ideal = ideal_wall_s(jobs, procs * limit, rate)
    distributed = max(
        (
            ideal_wall_s(ledger.jobs(i), outcome.limit, rate)
            for i, outcome in enumerate(outcomes)
        ),
        default=0.0,
    )

    counts = ledger.count_by_worker(len(outcomes))
    processes = [_process_stats(o, n) for o, n in zip(outcomes, counts, strict=True)]
    mean = sum(counts) / len(counts) if counts else 0.0
    spread = {
        "min": float(min(counts, default=0)),
        "max": float(max(counts, default=0)),
        "mean": round(mean, 1),
        "max_over_mean": round(max(counts) / mean, 3) if mean else 0.0,
    }

    effective = service_total / wall_s
    summaries = [o.summary for o in outcomes if o.summary is not None]
    return RunResult(
        strategy=strategy,
        procs=procs,
        limit=limit,
        published=ledger.published,
        processed=ledger.processed,
        lost=ledger.lost,
        duplicates=ledger.duplicates + sum(o.counters.duplicates for o in outcomes),
        foreign=sum(o.counters.foreign for o in outcomes),
        errors=sum(o.counters.errors for o in outcomes),
        slow_consumer=sum(o.counters.slow_consumer for o in outcomes),
        wall_s=round(wall_s, 4),
        ideal_wall_s=round(ideal, 4),
        distributed_wall_s=round(distributed, 4),
        throughput=round(ledger.processed / wall_s, 1),
        effective_concurrency=round(effective, 2),
        efficiency=round(effective / (procs * limit), 3),
        latency_ms=percentiles_ms(merge_histograms(s.latency_us for s in summaries)),
        wait_ms=percentiles_ms(merge_histograms(s.wait_us for s in summaries)),
        spread=spread,
        cpu_s=round(sum(s.cpu_s for s in summaries), 3),
        max_rss_mb=round(max((s.max_rss_mb for s in summaries), default=0.0), 1),
        processes=processes,
        dead_workers=[o.name for o in outcomes if o.died],
        timed_out=timed_out,
        interrupted=interrupted,
    )


def _process_stats(outcome: WorkerOutcome, processed: int) -> ProcessStats:
    summary = outcome.summary
    counters = outcome.counters
    return ProcessStats(
        name=outcome.name,
        pid=outcome.pid,
        host=outcome.host,
        processed=processed,
        cpu_s=round(summary.cpu_s, 3) if summary else None,
        max_rss_mb=round(summary.max_rss_mb, 1) if summary else None,
        exit_code=outcome.exit_code,
        died=outcome.died,
        abandoned=summary.abandoned if summary else 0,
        foreign=counters.foreign,
        errors=counters.errors,
        slow_consumer=counters.slow_consumer,
    )
