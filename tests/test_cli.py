"""Bad input to ``scaler run``: exit 2, the option named, nothing started."""

from __future__ import annotations

import pytest

from conftest import Finished, Spawner

USAGE_TIMEOUT_S = 20.0  # an interpreter start and an argument check


def run_usage_error(spawn: Spawner, *args: str) -> Finished:
    finished = spawn.run_scaler("run", *args, "--json", "-v", timeout_s=USAGE_TIMEOUT_S)

    assert finished.returncode == 2, finished.stderr
    assert finished.stdout == ""
    assert "Traceback" not in finished.stderr
    assert "started" not in finished.stderr  # no server, no worker
    return finished


@pytest.mark.parametrize(
    ("args", "option", "reason"),
    [
        (["--procs", "0"], "--procs", "greater than or equal to 1"),
        (["--procs", "many"], "--procs", "valid integer"),
        (["--limit", "-1"], "--limit", "greater than or equal to 1"),
        (["--messages", "0"], "--messages", "greater than or equal to 1"),
        (["--timeout", "0"], "--timeout", "greater than or equal to 0.1"),
        (["--work", "bogus"], "--work", "unknown work 'bogus'"),
        (["--work", "sleep:"], "--work", "needs a duration"),
        (["--loop", "tokio"], "--loop", "tokio"),
        (["--strategy", "nope"], "--strategy", "unknown strategy 'nope'"),
    ],
)
def test_bad_input_exits_2_naming_the_option_before_anything_starts(
    spawn: Spawner, args: list[str], option: str, reason: str
) -> None:
    finished = run_usage_error(spawn, *args)

    error = finished.stderr.splitlines()[-1]
    assert f"'{option}'" in error
    assert reason in error


@pytest.mark.parametrize("value", ["nope", "combined, ,x"])
def test_an_unknown_strategy_exits_2_naming_it_and_the_choices(
    spawn: Spawner, value: str
) -> None:
    finished = run_usage_error(spawn, "--strategy", value)

    error = finished.stderr.splitlines()[-1]
    assert "unknown strategy" in error
    assert "sequential, queue-group, in-subscription, combined" in error


def test_an_unknown_option_exits_2_naming_it(spawn: Spawner) -> None:
    finished = run_usage_error(spawn, "--workers", "3")

    assert "--workers" in finished.stderr
