"""The ``--work`` grammar: durations, steps, ranges, failures, and their text."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from scaler.workload import (
    Bound,
    Step,
    WorkFailed,
    WorkKind,
    WorkSpec,
    WorkSpecError,
    burn_cpu,
    format_duration,
    parse_duration,
)

SLEEP, EXP, CPU = WorkKind.SLEEP, WorkKind.EXP, WorkKind.CPU


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("20ms", 0.02),
        ("0.5s", 0.5),
        ("0.5", 0.5),
        (".5s", 0.5),
        ("2", 2.0),
        ("1.ms", 0.001),
        (" 7 ms ", 0.007),
        ("0", 0.0),
    ],
)
def test_durations_are_read_in_ms_or_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "-1s", "20us", "1e3ms", "2 m", "abc"])
def test_a_malformed_duration_is_rejected_with_a_hint(text: str) -> None:
    with pytest.raises(WorkSpecError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", WorkSpec()),
        ("NONE", WorkSpec()),
        (" none ", WorkSpec()),
        ("sleep:20ms", WorkSpec((Step(SLEEP, 0.02, 0.02),))),
        ("Sleep:0.5", WorkSpec((Step(SLEEP, 0.5, 0.5),))),
        ("sleep:0-0.5", WorkSpec((Step(SLEEP, 0.0, 0.5),))),
        ("sleep:10ms-20ms", WorkSpec((Step(SLEEP, 0.01, 0.02),))),
        ("sleep:5ms-5ms", WorkSpec((Step(SLEEP, 0.005, 0.005),))),
        ("exp:20ms", WorkSpec((Step(EXP, 0.02, 0.02),))),
        ("cpu:2ms", WorkSpec((Step(CPU, 0.002, 0.002),))),
        ("cpu:1s", WorkSpec((Step(CPU, 1.0, 1.0),))),
        (
            "exp:20ms+cpu:1ms",
            WorkSpec((Step(EXP, 0.02, 0.02), Step(CPU, 0.001, 0.001))),
        ),
        (
            " cpu:1ms + sleep:3ms ",
            WorkSpec((Step(CPU, 0.001, 0.001), Step(SLEEP, 0.003, 0.003))),
        ),
        ("none+sleep:1ms", WorkSpec((Step(SLEEP, 0.001, 0.001),))),
        ("sleep:10ms+fail:5%", WorkSpec((Step(SLEEP, 0.01, 0.01),), 0.05)),
        ("fail:0.25", WorkSpec((), 0.25)),
        ("fail:0", WorkSpec()),
        ("fail:100%", WorkSpec((), 1.0)),
    ],
)
def test_valid_work_specs_parse_to_their_steps_in_order(
    text: str, expected: WorkSpec
) -> None:
    assert WorkSpec.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown work ''"),
        ("bogus", "unknown work 'bogus'"),
        ("io:5ms", "unknown work 'io:5ms'"),
        ("none:1s", "unknown work 'none:1s'"),
        ("sleep:1ms+", "unknown work ''"),
        ("sleep", "needs a duration"),
        ("sleep:", "needs a duration"),
        ("cpu", "needs a duration"),
        ("exp:", "needs a duration"),
        ("sleep:abc", "not a duration"),
        ("sleep:-5ms", "not a duration"),
        ("sleep:1-2-3", "not a duration"),
        ("sleep:5ms-", "not a duration"),
        ("sleep:20ms-10ms", "runs backwards"),
        ("cpu:1ms-2ms", "cpu takes one duration"),
        ("exp:1ms-2ms", "exp takes one duration"),
        ("fail:", "not a fraction"),
        ("fail:often", "not a fraction"),
        ("fail:150%", "outside 0-1"),
        ("fail:-0.1", "outside 0-1"),
        ("fail:nan", "outside 0-1"),
    ],
)
def test_invalid_work_specs_are_rejected_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(WorkSpecError, match=message):
        WorkSpec.parse(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("none", "none"),
        ("fail:0", "none"),
        ("sleep:0.02", "sleep:20ms"),
        ("sleep:1500ms", "sleep:1.5s"),
        ("sleep:0-0.5", "sleep:0s-500ms"),
        ("sleep:250ms-2s", "sleep:250ms-2s"),
        ("cpu:2ms", "cpu:2ms"),
        ("cpu:0.3", "cpu:300ms"),
        ("exp:0.1ms", "exp:0.1ms"),
        ("none+exp:20ms+cpu:1ms", "exp:20ms+cpu:1ms"),
        ("sleep:10ms+fail:5%", "sleep:10ms+fail:0.05"),
        ("fail:2%+sleep:10ms", "sleep:10ms+fail:0.02"),
    ],
)
def test_a_spec_prints_in_canonical_form_and_parses_back_to_itself(
    text: str, canonical: str
) -> None:
    spec = WorkSpec.parse(text)

    assert str(spec) == canonical
    assert WorkSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["sleep:1.2345678s", "fail:0.1234567"])
def test_a_spec_with_many_significant_digits_survives_the_round_trip(
    text: str,
) -> None:
    spec = WorkSpec.parse(text)

    assert WorkSpec.parse(str(spec)) == spec


def test_format_duration_picks_ms_below_one_second() -> None:
    assert format_duration(0) == "0s"
    assert format_duration(0.02) == "20ms"
    assert format_duration(1) == "1s"
    assert format_duration(90) == "90s"


@pytest.mark.parametrize(
    ("text", "bound"),
    [
        ("none", Bound.NONE),
        ("fail:10%", Bound.NONE),
        ("sleep:0", Bound.NONE),
        ("sleep:1ms", Bound.IO),
        ("exp:5ms", Bound.IO),
        ("cpu:1ms", Bound.CPU),
        ("cpu:1ms+fail:1%", Bound.CPU),
        ("sleep:1ms+cpu:1ms", Bound.MIXED),
    ],
)
def test_a_spec_knows_whether_it_waits_computes_or_both(
    text: str, bound: Bound
) -> None:
    spec = WorkSpec.parse(text)

    assert spec.bound is bound
    assert spec.is_cpu_bound == (bound is Bound.CPU)


def test_mean_costs_add_up_by_kind() -> None:
    spec = WorkSpec.parse("sleep:10ms-20ms+exp:5ms+cpu:2ms")

    assert spec.mean_io_s == pytest.approx(0.02)
    assert spec.mean_cpu_s == pytest.approx(0.002)
    assert spec.mean_s == pytest.approx(0.022)


def test_a_range_draws_within_its_bounds_and_a_fixed_cost_draws_itself() -> None:
    ranged = Step(SLEEP, 0.01, 0.02)
    draws = [ranged.draw() for _ in range(200)]

    assert all(0.01 <= d <= 0.02 for d in draws)
    assert len(set(draws)) > 1
    assert Step(CPU, 0.003, 0.003).draw() == 0.003


def test_an_exponential_step_draws_around_its_mean() -> None:
    step = Step(EXP, 0.01, 0.01)
    draws = [step.draw() for _ in range(4000)]

    assert min(draws) >= 0
    assert max(draws) > 0.03  # a long tail, unlike a uniform range
    assert sum(draws) / len(draws) == pytest.approx(0.01, rel=0.15)
    assert Step(EXP, 0.0, 0.0).draw() == 0.0


def test_failures_are_spread_over_sequence_numbers_and_repeat_exactly() -> None:
    spec = WorkSpec.parse("fail:5%")

    failing = [seq for seq in range(1000) if spec.fails(seq)]

    assert 45 <= len(failing) <= 55
    assert failing == [seq for seq in range(1000) if spec.fails(seq)]
    assert max(b - a for a, b in itertools.pairwise(failing)) < 60
    assert not any(WorkSpec.parse("sleep:1ms").fails(seq) for seq in range(1000))
    assert all(WorkSpec.parse("fail:1").fails(seq) for seq in range(1000))


def test_a_failing_message_raises_after_its_work_and_others_do_not() -> None:
    spec = WorkSpec.parse("cpu:1ms+fail:50%")
    failing = next(seq for seq in range(100) if spec.fails(seq))
    passing = next(seq for seq in range(100) if not spec.fails(seq))

    async def perform(seq: int) -> float:
        before = time.thread_time()
        try:
            await asyncio.wait_for(spec.perform(seq), 5)
        finally:
            spent = time.thread_time() - before
        return spent

    assert asyncio.run(perform(passing)) >= 0.001
    with pytest.raises(WorkFailed, match=f"message {failing} failed"):
        asyncio.run(perform(failing))


def test_burn_cpu_spends_at_least_the_cpu_time_asked_for() -> None:
    before = time.thread_time()

    burn_cpu(0.005)

    assert time.thread_time() - before >= 0.005


def test_cpu_work_holds_the_thread_while_sleep_work_yields() -> None:
    async def overlapped(spec: WorkSpec) -> float:
        """CPU time of this thread while 5 messages' work runs at once."""
        before = time.thread_time()
        work = asyncio.gather(*(spec.perform(seq) for seq in range(5)))
        await asyncio.wait_for(work, 5)
        return time.thread_time() - before

    assert asyncio.run(overlapped(WorkSpec.parse("cpu:4ms"))) >= 0.02
    assert asyncio.run(overlapped(WorkSpec.parse("sleep:20ms"))) < 0.02
