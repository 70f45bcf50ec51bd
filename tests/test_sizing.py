"""Sizing a handler from the command line: sweep, failure rates, --handler.

Real nats-server, real worker processes, through ``python -m scaler``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import Spawner
from scaler.workload import WorkSpec

SWEEP_TIMEOUT_S = 90.0
REPO = Path(__file__).resolve().parent.parent


def cells(doc: dict[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    return {(r["procs"], r["limit"]): r for r in doc["runs"]}


def test_sweep_runs_every_cell_and_recommends_by_its_rule(
    spawn: Spawner, tmp_path: Path
) -> None:
    picture = tmp_path / "sweep.svg"
    finished = spawn.run_scaler(
        "sweep",
        "--procs", "1,2",
        "--limit", "1-4:x2",
        "--work", "sleep:5ms",
        "--messages", "120",
        "--json",
        "--plot", str(picture),
        timeout_s=SWEEP_TIMEOUT_S,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stderr
    doc = finished.json()
    grid = cells(doc)
    assert set(grid) == {(p, lim) for p in (1, 2) for lim in (1, 2, 4)}
    assert all(r["processed"] == r["published"] == 120 for r in grid.values())

    # The rule, applied to the measured numbers: within 5 % of the best,
    # then the fewest processes, then the smallest limit.
    best = max(r["throughput"] for r in grid.values())
    band = [key for key, r in grid.items() if r["throughput"] >= 0.95 * best]
    chosen = doc["recommendation"]
    assert (chosen["procs"], chosen["limit"]) == min(band)
    assert chosen["reason"]

    svg = picture.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg


def test_a_p99_bound_no_cell_meets_recommends_nothing(spawn: Spawner) -> None:
    finished = spawn.run_scaler(
        "sweep",
        "--procs", "1",
        "--limit", "1,2",
        "--work", "sleep:5ms",
        "--messages", "60",
        "--p99", "1ms",
        "--json",
        timeout_s=SWEEP_TIMEOUT_S,
    )  # fmt: skip

    assert finished.returncode == 0, finished.stderr
    chosen = finished.json()["recommendation"]
    assert chosen["procs"] is None and chosen["limit"] is None
    assert "p99" in chosen["reason"]


def test_the_failure_rate_is_counted_exactly_as_errors_not_loss(
    spawn: Spawner,
) -> None:
    work = "sleep:1ms+fail:10%"
    finished = spawn.run_scaler(
        "run",
        "--strategy", "in-subscription,queue-group",
        "--procs", "2",
        "--limit", "4",
        "--messages", "300",
        "--work", work,
        "--json",
    )  # fmt: skip

    assert finished.returncode == 0, finished.stderr
    expected = sum(WorkSpec.parse(work).fails(seq) for seq in range(300))
    assert 20 < expected < 40
    for run in finished.json()["runs"]:
        assert run["errors"] == expected, run["strategy"]
        assert run["lost"] == 0
        assert run["processed"] == 300


def test_the_shipped_example_handler_runs_in_the_workers(spawn: Spawner) -> None:
    # From the repository root, where ``examples`` is importable.
    finished = spawn(
        [
            "env", "-C", str(REPO), sys.executable, "-m", "scaler", "run",
            "--strategy", "combined",
            "--procs", "2",
            "--limit", "2",
            "--messages", "40",
            "--handler", "examples.digest:handle",
            "--json",
        ],
        label="scaler run --handler",
    ).finish()  # fmt: skip

    assert finished.returncode == 0, finished.stderr
    (run,) = finished.json()["runs"]
    assert run["processed"] == 40
    assert run["errors"] == 0
    assert run["cpu_s"] > 0


def test_a_handler_that_cannot_be_imported_is_a_usage_error(spawn: Spawner) -> None:
    finished = spawn.run_scaler("run", "--handler", "no_such_module:handle")

    assert finished.returncode == 2
    assert "no_such_module" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert finished.stdout == ""


def test_a_bad_sweep_axis_is_a_usage_error(spawn: Spawner) -> None:
    finished = spawn.run_scaler("sweep", "--procs", "0,2")

    assert finished.returncode == 2
    assert "--procs" in finished.stderr


def test_a_paced_run_publishes_no_faster_than_its_rate(spawn: Spawner) -> None:
    finished = spawn.run_scaler(
        "run",
        "--strategy", "combined",
        "--procs", "2",
        "--limit", "4",
        "--messages", "60",
        "--rate", "100",
        "--work", "sleep:2ms",
        "--json",
    )  # fmt: skip

    assert finished.returncode == 0, finished.stderr
    doc = finished.json()
    assert doc["workload"]["rate"] == 100
    (run,) = doc["runs"]
    assert run["processed"] == 60
    # The last message may not leave before 59 / 100 s, nor finish before.
    assert run["wall_s"] >= 0.59
    assert run["ideal_wall_s"] >= 0.59
