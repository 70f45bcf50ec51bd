"""``scaler sweep``'s pure parts: the grid axes, the recommendation, JSON, table."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from scaler import sweep
from scaler.stats import RunResult
from scaler.sweep import AxisError, grid, parse_axis, recommend


def cell(
    procs: int,
    limit: int,
    throughput: float,
    p99_ms: float | None = 50.0,
    **changes: Any,
) -> RunResult:
    """A RunResult for one grid cell, complete unless ``changes`` say otherwise."""
    fields: dict[str, Any] = {
        "strategy": sweep.cell_name(procs, limit),
        "procs": procs,
        "limit": limit,
        "published": 1000,
        "processed": 1000,
        "lost": 0,
        "duplicates": 0,
        "foreign": 0,
        "errors": 0,
        "slow_consumer": 0,
        "wall_s": 1000 / throughput if throughput else 1.0,
        "ideal_wall_s": 0.9 * 1000 / throughput if throughput else 1.0,
        "distributed_wall_s": 0.95 * 1000 / throughput if throughput else 1.0,
        "throughput": throughput,
        "effective_concurrency": 0.8 * procs * limit,
        "efficiency": 0.8,
        "latency_ms": {"p50": None, "p90": None, "p99": p99_ms, "max": None},
        "wait_ms": {"p50": None, "p90": None, "p99": None, "max": None},
        "spread": {"min": 0.0, "max": 0.0, "mean": 0.0, "max_over_mean": 0.0},
        "cpu_s": 0.0,
        "max_rss_mb": 0.0,
        "processes": [],
    }
    fields.update(changes)
    return RunResult(**fields)


def shape(recommendation: sweep.Recommendation) -> tuple[int | None, int | None]:
    return recommendation.procs, recommendation.limit


# --- axes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1,2,4", [1, 2, 4]),
        ("8", [8]),
        ("1-4", [1, 2, 3, 4]),
        ("3-3", [3]),
        ("1-64:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("1-100:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("2-200:x10", [2, 20, 200]),
        ("64,1-4, 16", [1, 2, 3, 4, 16, 64]),
        ("4,4,2-4", [2, 3, 4]),
        (" 1 , 2 ", [1, 2]),
    ],
)
def test_an_axis_is_the_sorted_distinct_values_of_its_items(
    text: str, values: list[int]
) -> None:
    assert parse_axis(text) == values


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty item"),
        ("  ", "empty item"),
        ("1,,2", "empty item"),
        ("2,", "empty item"),
        ("0", "values start at 1"),
        ("0-4", "values start at 1"),
        ("-1", "is not a value"),
        ("-2-4", "is not a value"),
        ("four", "is not a value"),
        ("1.5", "is not a value"),
        ("1-", "is not a value"),
        ("1-8:2", "is not a value"),
        ("1-8:x", "is not a value"),
        ("8:x2", "is not a value"),
        ("\u0663", "is not a value"),  # an Arabic-Indic 3: digits are 0-9 only
        ("4-1", "runs backwards"),
        ("1-8:x1", "multiplies by 2 or more"),
        ("1-8:x0", "multiplies by 2 or more"),
        ("1-1000", "more than 64 values"),
        ("1-999999999", "more than 64 values"),
        ("1-1000000000", "is not a value"),
        ("9" * 5000, "is not a value"),
        ("1-40,41-80", "more than 64 values"),
    ],
)
def test_a_bad_axis_is_refused_on_one_line_saying_why(text: str, says: str) -> None:
    with pytest.raises(AxisError) as caught:
        parse_axis(text)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    assert len(message) < 120


def test_axis_errors_are_value_errors_for_the_command_line() -> None:
    assert issubclass(AxisError, ValueError)


def test_the_grid_has_every_pair_named_procs_by_limit_in_row_order() -> None:
    cells = grid([1, 2], [1, 8, 64])
    assert [(s.name, s.procs, s.limit) for s in cells] == [
        ("1×1", 1, 1),
        ("1×8", 1, 8),
        ("1×64", 1, 64),
        ("2×1", 2, 1),
        ("2×8", 2, 8),
        ("2×64", 2, 64),
    ]


# --- the recommendation ------------------------------------------------------------


def test_the_fewest_processes_within_five_percent_of_the_best_are_recommended() -> None:
    results = [cell(4, 8, 990), cell(2, 64, 1000), cell(1, 64, 960)]
    assert shape(recommend(results)) == (1, 64)


def test_a_cell_just_outside_the_five_percent_band_is_not_recommended() -> None:
    results = [cell(1, 64, 949), cell(2, 8, 1000)]
    assert shape(recommend(results)) == (2, 8)


def test_a_cell_exactly_on_the_band_edge_counts_as_within_it() -> None:
    results = [cell(2, 8, 1000), cell(1, 64, 950)]
    assert shape(recommend(results)) == (1, 64)


def test_among_equal_process_counts_the_smallest_limit_is_recommended() -> None:
    results = [cell(2, 64, 1000), cell(2, 16, 995), cell(2, 8, 990), cell(1, 1, 10)]
    assert shape(recommend(results)) == (2, 8)


def test_equal_throughput_goes_to_the_cheapest_cell_whatever_the_order() -> None:
    results = [cell(4, 1, 500), cell(2, 4, 500), cell(2, 2, 500), cell(8, 1, 500)]
    for order in (results, results[::-1]):
        assert shape(recommend(order)) == (2, 2)


def test_cells_that_lost_messages_are_never_recommended() -> None:
    results = [cell(1, 8, 5000, lost=3, processed=997), cell(2, 8, 1000)]
    recommendation = recommend(results)
    assert shape(recommendation) == (2, 8)
    assert "1 cell that lost messages" in recommendation.reason


@pytest.mark.parametrize(
    "trouble",
    [
        {"dead_workers": ["1×8.1"]},
        {"timed_out": True},
        {"interrupted": True},
        {"processed": 0, "published": 0},
        {"errors": 1000},
    ],
)
def test_cells_cut_short_or_failing_every_message_are_not_recommended(
    trouble: dict[str, Any],
) -> None:
    results = [cell(1, 8, 5000, **trouble), cell(2, 8, 1000)]
    assert shape(recommend(results)) == (2, 8)


def test_a_cell_failing_more_often_than_the_others_is_left_out() -> None:
    results = [cell(1, 8, 5000, errors=300), cell(2, 8, 1000, errors=20)]
    assert shape(recommend(results)) == (2, 8)


def test_a_failure_rate_shared_by_every_cell_does_not_stop_a_recommendation() -> None:
    results = [cell(1, 8, 1000, errors=20), cell(2, 8, 1000, errors=25)]
    assert shape(recommend(results)) == (1, 8)


def test_without_a_complete_cell_nothing_is_recommended() -> None:
    recommendation = recommend([cell(1, 1, 100, lost=1), cell(2, 1, 200, lost=5)])
    assert shape(recommendation) == (None, None)
    assert "nothing to recommend" in recommendation.reason
    assert shape(recommend([])) == (None, None)


def test_a_p99_bound_keeps_only_the_cells_that_meet_it() -> None:
    results = [
        cell(1, 64, 2000, p99_ms=900.0),
        cell(2, 8, 1000, p99_ms=150.0),
        cell(4, 4, 1020, p99_ms=200.0),
        cell(1, 8, 600, p99_ms=120.0),
    ]
    assert shape(recommend(results)) == (1, 64)
    bounded = recommend(results, max_p99_ms=200)
    assert shape(bounded) == (2, 8)
    assert bounded.best_throughput == 1020
    assert bounded.candidates == 3
    assert "150.0 ms against the 200 ms bound" in bounded.reason
    assert "which 1 other cell exceeded" in bounded.reason


def test_the_reason_says_when_no_other_cell_exceeded_the_p99_bound() -> None:
    results = [cell(1, 8, 900, p99_ms=40.0), cell(2, 8, 1000, p99_ms=30.0)]
    reason = recommend(results, max_p99_ms=100).reason
    assert reason.endswith(
        "Its p99 latency was 30.0 ms against the 100 ms bound, "
        "which no other cell exceeded."
    )


def test_a_cell_without_latency_figures_does_not_meet_a_p99_bound() -> None:
    results = [cell(1, 8, 2000, p99_ms=None), cell(2, 8, 1000, p99_ms=10.0)]
    assert shape(recommend(results, max_p99_ms=100)) == (2, 8)


def test_when_no_cell_meets_the_p99_bound_nothing_is_recommended() -> None:
    results = [cell(1, 8, 900, p99_ms=450.0), cell(2, 8, 1000, p99_ms=320.5)]
    recommendation = recommend(results, max_p99_ms=200)
    assert shape(recommendation) == (None, None)
    assert recommendation.reason == (
        "No cell kept its p99 latency within 200 ms; the lowest was 320.5 ms, "
        "at 2×8, so there is nothing to recommend under that bound."
    )


def test_a_p99_bound_must_be_above_zero() -> None:
    with pytest.raises(ValueError, match="above 0 ms"):
        recommend([cell(1, 1, 100)], max_p99_ms=0)


def test_the_reason_explains_a_cheaper_choice_from_the_numbers() -> None:
    results = [cell(4, 8, 1234), cell(2, 8, 1200.4), cell(1, 8, 400)]
    recommendation = recommend(results)
    assert recommendation.reason == (
        "2×8 reached 1,200 msg/s, within 5% of the best (1,234 msg/s at 4×8), "
        "with the fewest processes and then the smallest limit of those cells."
    )
    assert recommendation.throughput == 1200.4
    assert recommendation.cell == "2×8"


def test_the_reason_says_when_the_best_cell_is_also_the_cheapest() -> None:
    recommendation = recommend([cell(1, 64, 5000), cell(2, 64, 4000)])
    assert recommendation.reason.startswith(
        "1×64 had the highest throughput, 5,000 msg/s, and no cell with fewer "
        "processes, or as many and a smaller limit, came within 5% of it."
    )


# --- the JSON document and the table ------------------------------------------------


def test_the_json_document_holds_every_run_and_the_recommendation() -> None:
    results = [cell(1, 8, 900), cell(2, 8, 1000)]
    recommendation = recommend(results)
    workload = {"work": "sleep:10ms", "messages": 1000}
    doc = json.loads(
        json.dumps(sweep.document(results, workload, recommendation, exit_code=0))
    )
    assert set(doc) == {"version", "workload", "runs", "recommendation", "exit_code"}
    assert doc["workload"] == workload
    assert [run["strategy"] for run in doc["runs"]] == ["1×8", "2×8"]
    assert doc["recommendation"]["procs"] == 2
    assert doc["recommendation"]["limit"] == 8
    assert doc["recommendation"]["reason"] == recommendation.reason


def render(table: Any) -> str:
    console = Console(record=True, width=120, color_system=None)
    console.print(table)
    return console.export_text()


def test_the_table_is_a_grid_of_processes_by_limit_with_the_choice_starred() -> None:
    results = [
        cell(1, 1, 95, p99_ms=10485.8),
        cell(1, 64, 5494),
        cell(2, 1, 185),
        cell(2, 64, 9849, p99_ms=99.8),
    ]
    text = render(sweep.table(results, recommend(results)))
    header = next(line for line in text.splitlines() if "procs" in line)
    assert header.index(" 1 ") < header.index(" 64 ")
    row = next(line for line in text.splitlines() if "9,849" in line)
    assert row.split("│")[1].strip() == "2"
    assert "★ 9,849 msg/s" in row
    assert "p99 10,485.8 ms" in text
    assert text.count("★") == 1


def test_the_table_shows_why_a_cell_was_left_out() -> None:
    results = [cell(1, 1, 100, lost=7), cell(1, 8, 800, errors=1000), cell(2, 8, 1)]
    text = render(sweep.table(results))
    assert "lost 7" in text
    assert "errors 1,000" in text
    assert "★" not in text
