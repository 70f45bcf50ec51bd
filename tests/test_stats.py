"""Accounting and statistics, checked against cases worked out by hand."""

from __future__ import annotations

from array import array

import pytest
from hdrh.histogram import HdrHistogram

from conftest import RUN_KEYS
from scaler.protocol import Counters, Progress, Summary
from scaler.stats import (
    Ledger,
    WorkerOutcome,
    ideal_wall_s,
    makespan,
    merge_histograms,
    percentiles_ms,
    summarize,
)

MS = 1_000_000  # ns
T0 = 1_700_000_000_000_000_000  # ns: when a hand-built run published


def done(*pairs: tuple[int, int]) -> array[int]:
    """A done batch from (seq, service µs) pairs."""
    return array("I", [value for pair in pairs for value in pair])


def histogram(*values_us: int, count: int = 1) -> str:
    """An encoded HdrHistogram of ``values_us``, as a worker sends one."""
    h = HdrHistogram(1, 3_600_000_000, 2)
    for value in values_us:
        h.record_value(value, count)
    encoded: bytes = h.encode()
    return encoded.decode("ascii")


# --- Ledger -------------------------------------------------------------------


def test_every_published_message_done_once_leaves_nothing_lost() -> None:
    ledger = Ledger(3)

    ledger.add(0, done((0, 10), (2, 30)))
    ledger.add(1, done((1, 20)))

    assert (ledger.processed, ledger.lost, ledger.duplicates) == (3, 0, 0)
    assert ledger.count_by_worker(2) == [2, 1]


def test_a_message_never_reported_done_is_lost() -> None:
    ledger = Ledger(5)

    ledger.add(0, done((0, 10), (3, 10)))

    assert ledger.processed == 2
    assert ledger.lost == 3


def test_a_second_report_of_a_message_is_a_duplicate_and_the_first_counts() -> None:
    ledger = Ledger(2)

    ledger.add(0, done((1, 100)))
    ledger.add(1, done((1, 900)))
    ledger.add(0, done((1, 500)))

    assert ledger.processed == 1
    assert ledger.duplicates == 2
    assert ledger.lost == 1
    assert ledger.jobs() == [(1, 0.0001)]
    assert ledger.count_by_worker(2) == [1, 0]


def test_a_sequence_number_never_published_is_counted_as_unknown() -> None:
    ledger = Ledger(2)

    ledger.add(0, done((2, 10), (1_000_000, 10), (0, 10)))

    assert ledger.unknown == 2
    assert ledger.processed == 1
    assert ledger.lost == 1


def test_a_message_with_zero_service_time_still_counts_as_done() -> None:
    ledger = Ledger(1)

    ledger.add(0, done((0, 0)))

    assert ledger.processed == 1
    assert ledger.lost == 0
    assert ledger.jobs() == [(0, 0.0)]


def test_service_times_come_in_publish_order_per_worker_or_for_all() -> None:
    ledger = Ledger(4)

    ledger.add(1, done((3, 4000), (0, 1000)))
    ledger.add(0, done((2, 3000), (1, 2000)))

    assert ledger.jobs() == [(0, 0.001), (1, 0.002), (2, 0.003), (3, 0.004)]
    assert ledger.jobs(0) == [(1, 0.002), (2, 0.003)]
    assert ledger.jobs(1) == [(0, 0.001), (3, 0.004)]


def test_a_ledger_with_nothing_published_reports_nothing_lost() -> None:
    ledger = Ledger(0)

    ledger.add(0, done((0, 1)))

    assert (ledger.processed, ledger.lost, ledger.unknown) == (0, 0, 1)


# --- makespan -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("costs", "slots", "expected"),
    [
        ([], 3, 0.0),
        ([1.0, 1.0, 1.0], 1, 3.0),
        ([2.0, 2.0, 2.0], 2, 4.0),  # two at once, then the third alone
        ([3.0, 1.0, 1.0, 1.0], 2, 3.0),  # the short ones fit beside the long one
        ([1.0, 1.0, 4.0], 2, 5.0),  # in order: the long one starts last
        ([5.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2, 5.0),
        ([1.0, 2.0, 3.0], 10, 3.0),  # more slots than messages
        ([1.0, 1.0], 0, 2.0),  # no slots is taken as one
    ],
)
def test_makespan_is_a_perfect_in_order_dispatch(
    costs: list[float], slots: int, expected: float
) -> None:
    assert makespan(costs, slots) == pytest.approx(expected)


# --- histograms and percentiles -----------------------------------------------


def test_histograms_from_several_workers_merge_before_percentiles() -> None:
    fast = histogram(1000, count=50)  # 1 ms
    slow = histogram(10_000, count=50)  # 10 ms

    merged = merge_histograms([fast, "", slow])

    assert merged is not None
    assert merged.get_total_count() == 100
    result = percentiles_ms(merged)
    assert result["p50"] == pytest.approx(1.0, rel=0.01)
    assert result["p90"] == pytest.approx(10.0, rel=0.01)
    assert result["p99"] == pytest.approx(10.0, rel=0.01)
    assert result["max"] == pytest.approx(10.0, rel=0.01)


def test_percentiles_of_a_spread_follow_the_recorded_values() -> None:
    merged = merge_histograms([histogram(*range(1000, 101_000, 1000))])

    result = percentiles_ms(merged)

    assert result["p50"] == pytest.approx(50.0, rel=0.01)
    assert result["p90"] == pytest.approx(90.0, rel=0.01)
    assert result["p99"] == pytest.approx(99.0, rel=0.01)
    assert result["max"] == pytest.approx(100.0, rel=0.01)


def test_no_recorded_value_gives_none_for_every_percentile() -> None:
    nothing = {"p50": None, "p90": None, "p99": None, "max": None}

    assert merge_histograms(["", ""]) is None
    assert percentiles_ms(None) == nothing
    assert percentiles_ms(merge_histograms([histogram()])) == nothing


# --- summarize ----------------------------------------------------------------


def finished(name: str, done_text: str, last_done_ns: int, **extra: object) -> Summary:
    fields: dict[str, object] = {
        "worker": name,
        "pid": 100,
        "run": "0123abcd",
        "counters": Counters(received=2, processed=2, foreign=3),
        "done": done_text,
        "last_done_ns": last_done_ns,
        "latency_us": histogram(200_000, 400_000),
        "cpu_s": 0.5,
        "max_rss_mb": 40.04,
    }
    fields.update(extra)
    return Summary(**fields)  # type: ignore[arg-type]


def test_a_run_with_a_dead_worker_is_summarized_from_both_workers_reports() -> None:
    # Four messages of 100 ms each: worker 1 finished 0 and 1 and wrote its
    # summary; worker 2 finished 2, reported it in a progress record, and
    # was killed holding 3.
    ledger = Ledger(4)
    ledger.add(0, done((0, 100_000), (1, 100_000)))
    ledger.add(1, done((2, 100_000)))
    alive = WorkerOutcome(
        name="queue-group.1",
        limit=1,
        pid=100,
        host="vm",
        exit_code=0,
        summary=finished("queue-group.1", "", T0 + 400 * MS),
    )
    dead = WorkerOutcome(
        name="queue-group.2",
        limit=1,
        pid=101,
        exit_code=-9,
        progress=Progress(
            worker="queue-group.2",
            run="0123abcd",
            counters=Counters(received=2, processed=1, foreign=1, duplicates=1),
            last_done_ns=T0 + 200 * MS,
        ),
    )

    result = summarize("queue-group", 2, 1, ledger, [alive, dead], T0, T0 + 900 * MS)

    assert (result.published, result.processed, result.lost) == (4, 3, 1)
    assert result.dead_workers == ["queue-group.2"]
    assert result.wall_s == pytest.approx(0.4)  # to the last completion
    assert result.ideal_wall_s == pytest.approx(0.2)  # 3 messages of 100 ms, 2 slots
    assert result.distributed_wall_s == pytest.approx(0.2)  # worker 1: 2 of 100 ms
    assert result.throughput == pytest.approx(7.5)  # 3 / 0.4 s
    assert result.effective_concurrency == pytest.approx(0.75)  # 0.3 s / 0.4 s
    assert result.efficiency == pytest.approx(0.375)  # 0.75 of 2 slots
    assert result.foreign == 4
    assert result.duplicates == 1
    assert result.cpu_s == pytest.approx(0.5)  # the dead worker's is unknown
    assert result.max_rss_mb == pytest.approx(40.0)
    assert result.latency_ms["p50"] == pytest.approx(200.0, rel=0.01)
    assert result.latency_ms["max"] == pytest.approx(400.0, rel=0.01)
    assert result.spread == {
        "min": 1.0,
        "max": 2.0,
        "mean": 1.5,
        "max_over_mean": 1.333,
    }
    first, second = result.processes
    assert (first.name, first.processed, first.died, first.cpu_s) == (
        "queue-group.1",
        2,
        False,
        0.5,
    )
    assert (second.name, second.processed, second.died) == ("queue-group.2", 1, True)
    assert (second.exit_code, second.cpu_s, second.max_rss_mb) == (-9, None, None)
    assert not result.interrupted and not result.timed_out


def test_a_run_where_nothing_completed_ends_its_wall_time_at_the_stop() -> None:
    ledger = Ledger(2)
    idle = WorkerOutcome(
        name="in-subscription.1",
        limit=5,
        summary=finished(
            "in-subscription.1", "", 0, counters=Counters(), latency_us=""
        ),
    )

    result = summarize(
        "in-subscription", 1, 5, ledger, [idle], T0, T0 + 1500 * MS, interrupted=True
    )

    assert result.wall_s == pytest.approx(1.5)
    assert (result.processed, result.lost, result.throughput) == (0, 2, 0.0)
    assert result.ideal_wall_s == 0.0
    assert result.latency_ms["p50"] is None
    assert result.dead_workers == []
    assert result.interrupted


def test_the_json_form_of_a_result_names_every_documented_field() -> None:
    ledger = Ledger(1)
    ledger.add(0, done((0, 1000)))
    outcome = WorkerOutcome(
        name="sequential.1",
        limit=1,
        summary=finished("sequential.1", "", T0 + 2 * MS),
    )

    doc = summarize("sequential", 1, 1, ledger, [outcome], T0, T0 + 3 * MS).to_json()

    assert doc.keys() >= RUN_KEYS
    assert doc["processes"][0]["processed"] == 1


@pytest.mark.parametrize(
    ("costs", "arrivals", "slots", "expected"),
    [
        ([1.0, 1.0], [0.0, 5.0], 1, 6.0),  # idle until the second arrives
        ([3.0, 1.0], [0.0, 1.0], 2, 3.0),  # the second fits beside the first
        ([1.0, 1.0, 1.0], [0.0, 0.0, 0.5], 1, 3.0),  # a backlog: arrival is moot
    ],
)
def test_makespan_waits_for_each_message_to_arrive(
    costs: list[float], arrivals: list[float], slots: int, expected: float
) -> None:
    assert makespan(costs, slots, arrivals) == pytest.approx(expected)


def test_the_ideal_of_a_paced_run_starts_each_message_at_its_publish_time() -> None:
    jobs = [(0, 0.1), (2, 0.1)]  # seq 1 was lost; seq 2 arrives at 2 / rate

    assert ideal_wall_s(jobs, slots=4, rate=10.0) == pytest.approx(0.3)
    assert ideal_wall_s(jobs, slots=4, rate=0.0) == pytest.approx(0.1)
