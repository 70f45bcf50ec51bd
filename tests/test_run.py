"""``scaler run`` end to end: a real nats-server and real worker processes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from typing import Any

import nats
import pytest

from conftest import (
    PROCESS_KEYS,
    RUN_KEYS,
    SUPPORT_DIR,
    Finished,
    NatsServer,
    Spawner,
    pid_alive,
)
from scaler import payload
from scaler.workload import WorkSpec

RUN_TIMEOUT_S = 45.0  # one `scaler run` of a few hundred short messages
PUBLISH_TIMEOUT_S = 10.0  # connect, publish and flush a handful of messages

PUBLISHED = r"INFO scaler\.supervisor: (\S+): published (\d+) messages"
STARTED = r"INFO scaler\.supervisor: ({name}) started \(pid=(\d+)\)"
SERVER_STARTED = r"nats-server started on \S+ \(pid=(\d+)\)"


def runs_by_strategy(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {run["strategy"]: run for run in doc["runs"]}


def assert_all_processed(run: dict[str, Any]) -> None:
    assert run["lost"] == 0, run
    assert run["processed"] == run["published"], run
    assert run["duplicates"] == 0, run
    assert run["dead_workers"] == [], run
    assert sum(p["processed"] for p in run["processes"]) == run["published"]
    assert all(p["exit_code"] == 0 and not p["died"] for p in run["processes"])


def pids_started(finished: Finished, strategy: str) -> list[int]:
    """The pids of a strategy's workers, from the supervisor's -v log."""
    pattern = STARTED.format(name=re.escape(strategy) + r"\.\d+")
    return [int(m[2]) for m in re.finditer(pattern, finished.stderr)]


def assert_no_traceback(finished: Finished) -> None:
    assert "Traceback" not in finished.stderr, finished.stderr
    assert "Traceback" not in finished.stdout, finished.stdout


def test_every_message_is_processed_and_the_json_document_has_every_key(
    spawn: Spawner,
) -> None:
    finished = spawn.run_scaler(
        "run",
        "--procs",
        "2",
        "--limit",
        "3",
        "--messages",
        "60",
        "--work",
        "sleep:2ms",
        "--strategy",
        "sequential,queue-group,in-subscription,combined",
        "--json",
        timeout_s=RUN_TIMEOUT_S,
    )

    assert finished.returncode == 0, finished.stderr
    doc = finished.json()
    assert {"version", "workload", "runs", "verdict", "exit_code"} <= doc.keys()
    assert doc["exit_code"] == 0
    assert doc["workload"]["messages"] == 60
    assert doc["workload"]["work"] == "sleep:2ms"
    runs = runs_by_strategy(doc)
    assert list(runs) == ["sequential", "queue-group", "in-subscription", "combined"]
    shapes = {name: (run["procs"], run["limit"]) for name, run in runs.items()}
    assert shapes == {
        "sequential": (1, 1),
        "queue-group": (2, 1),
        "in-subscription": (1, 3),
        "combined": (2, 3),
    }
    for run in runs.values():
        assert run.keys() >= RUN_KEYS
        assert run["published"] == 60
        assert_all_processed(run)
        assert run["foreign"] == 0
        assert run["ideal_wall_s"] > 0 and run["wall_s"] > 0
        assert run["throughput"] == pytest.approx(60 / run["wall_s"], rel=0.01)
        slots = run["procs"] * run["limit"]
        assert 0 < run["efficiency"] <= 1.05
        assert run["effective_concurrency"] == pytest.approx(
            run["efficiency"] * slots, abs=0.02
        )
        latency = run["latency_ms"]
        assert set(latency) == {"p50", "p90", "p99", "max"}
        assert 2 <= latency["p50"] <= latency["p90"] <= latency["p99"]
        assert latency["p99"] <= latency["max"]
        assert len(run["processes"]) == run["procs"]
        for process in run["processes"]:
            assert process.keys() >= PROCESS_KEYS
            assert process["cpu_s"] > 0
            assert process["max_rss_mb"] > 0
            assert not pid_alive(process["pid"])  # stopped before the report


def test_without_json_a_table_and_a_verdict_are_printed(spawn: Spawner) -> None:
    finished = spawn.run_scaler(
        "run",
        "--strategy",
        "sequential",
        "--messages",
        "20",
        "--work",
        "none",
        timeout_s=RUN_TIMEOUT_S,
    )

    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("Throughput")
    row = next(line for line in finished.stdout.splitlines() if "sequential" in line)
    assert "1×1" in row
    assert " 20 " in row  # published and processed
    assert "sequential (1×1)" in finished.stdout  # the verdict names the shape
    assert "{" not in finished.stdout


def test_cpu_bound_work_gains_nothing_from_concurrency_inside_one_process(
    spawn: Spawner,
) -> None:
    finished = spawn.run_scaler(
        "run",
        "--procs",
        "2",
        "--limit",
        "5",
        "--messages",
        "200",
        "--work",
        "cpu:2ms",
        "--strategy",
        "queue-group,in-subscription",
        "--json",
        timeout_s=RUN_TIMEOUT_S,
    )

    assert finished.returncode == 0, finished.stderr
    runs = runs_by_strategy(finished.json())
    queue_group, in_subscription = runs["queue-group"], runs["in-subscription"]
    for run in (queue_group, in_subscription):
        assert_all_processed(run)
    # One process holds the GIL through each message's work, so its 5 slots
    # never overlap; two processes do, whatever else the machine is doing.
    assert in_subscription["effective_concurrency"] < 1.1
    assert in_subscription["efficiency"] < 0.25
    assert queue_group["effective_concurrency"] > 1.2


def test_failed_work_is_counted_as_errors_and_never_as_lost(spawn: Spawner) -> None:
    work = "sleep:1ms+fail:10%"
    failing = sum(WorkSpec.parse(work).fails(seq) for seq in range(50))

    finished = spawn.run_scaler(
        "run",
        "--strategy",
        "combined",
        "--procs",
        "2",
        "--limit",
        "3",
        "--messages",
        "50",
        "--work",
        work,
        "--json",
        timeout_s=RUN_TIMEOUT_S,
    )

    assert finished.returncode == 0, finished.stderr
    result = finished.json()["runs"][0]
    assert_all_processed(result)
    assert result["errors"] == failing > 0
    assert sum(p["errors"] for p in result["processes"]) == failing
    assert_no_traceback(finished)


def test_lost_messages_are_reported_when_a_worker_dies(spawn: Spawner) -> None:
    run = spawn.scaler(
        "run",
        "--strategy",
        "queue-group",
        "--procs",
        "2",
        "--messages",
        "120",
        "--work",
        "sleep:20ms",
        "--json",
        "-v",
    )
    victim = run.stderr.expect(STARTED.format(name=r"queue-group\.1"))
    run.stderr.expect(PUBLISHED)

    os.kill(int(victim[2]), signal.SIGKILL)
    finished = run.finish(RUN_TIMEOUT_S)

    assert finished.returncode == 1, finished.stderr
    result = finished.json()["runs"][0]
    assert result["published"] == 120
    assert result["lost"] > 0
    assert result["lost"] == result["published"] - result["processed"]
    assert result["dead_workers"] == ["queue-group.1"]
    killed, survivor = result["processes"]
    assert killed["died"] and killed["exit_code"] == -signal.SIGKILL
    assert killed["cpu_s"] is None
    assert not survivor["died"] and survivor["exit_code"] == 0
    assert survivor["processed"] > 0
    assert_no_traceback(finished)


def test_a_worker_failing_at_start_up_ends_the_run_with_its_exit_code_and_stderr(
    spawn: Spawner,
) -> None:
    finished = spawn.run_scaler(
        "run",
        "--strategy",
        "queue-group",
        "--procs",
        "2",
        "--messages",
        "10",
        "--work",
        "none",
        "--json",
        env={"PYTHONPATH": str(SUPPORT_DIR), "SCALER_TEST_WORKER_EXIT": "17"},
        timeout_s=RUN_TIMEOUT_S,
    )

    assert finished.returncode == 4, finished.stderr
    assert finished.stdout == ""
    errors = [
        line for line in finished.stderr.splitlines() if line.startswith("scaler:")
    ]
    assert len(errors) == 1, finished.stderr
    assert errors[0].startswith("scaler: queue-group.")
    assert "exited with code 17 before it was ready" in errors[0]
    assert errors[0].endswith("worker refused to start: disk quota exceeded")
    assert_no_traceback(finished)


async def publish_raw(server: NatsServer, subject: str, messages: list[bytes]) -> None:
    nc = await nats.connect(server.url, token=server.token, connect_timeout=2)
    try:
        for data in messages:
            await nc.publish(subject, data)
        await nc.flush()
    finally:
        await nc.close()


def test_foreign_and_garbage_messages_are_counted_and_never_processed(
    spawn: Spawner, nats_server: NatsServer
) -> None:
    run = spawn.scaler(
        "run",
        "--server",
        nats_server.url,
        "--strategy",
        "queue-group",
        "--procs",
        "2",
        "--messages",
        "100",
        "--work",
        "sleep:20ms",
        "--json",
        "-v",
        env={"NATS_TOKEN": nats_server.token},
    )
    run.stderr.expect(PUBLISHED)
    another_run = b"feedf00d"
    strangers = [
        b"",
        b"hello 3",
        b"SCL1",
        b"SCL1" + bytes(20),  # the magic, but shorter than a header
        b"SCL2" + bytes(24) + b"hello 0",  # another magic
        bytes(range(256)),
        # Well formed, but of another run: as ours, a duplicate and an unknown.
        payload.encode(another_run, 3, time.time_ns(), b"hello 3"),
        payload.encode(another_run, 10**6, time.time_ns(), b"hello 1000000"),
    ]

    asyncio.run(
        asyncio.wait_for(
            publish_raw(nats_server, "greet.joe", strangers), PUBLISH_TIMEOUT_S
        )
    )
    finished = run.finish(RUN_TIMEOUT_S)

    assert finished.returncode == 0, finished.stderr
    result = finished.json()["runs"][0]
    assert result["published"] == 100
    assert_all_processed(result)
    assert result["foreign"] == len(strangers)
    assert sum(p["foreign"] for p in result["processes"]) == len(strangers)
    assert finished.json()["workload"]["server"] == nats_server.url
    assert_no_traceback(finished)


def test_two_runs_on_one_server_keep_their_messages_apart(
    spawn: Spawner, nats_server: NatsServer
) -> None:
    args = [
        "run",
        "--strategy",
        "queue-group",
        "--procs",
        "2",
        "--messages",
        "150",
        "--work",
        "sleep:20ms",
        "--json",
        "-v",
    ]
    first = spawn.scaler(*args, env=nats_server.env)
    second = spawn.scaler(*args, env=nats_server.env)

    results = [child.finish(RUN_TIMEOUT_S) for child in (first, second)]

    for finished in results:
        assert finished.returncode == 0, finished.stderr
        assert "embedded" not in finished.stdout
        assert_all_processed(finished.json()["runs"][0])
    # The run that published first was still working when the other one
    # published, so its workers saw all those messages, as foreign: proof
    # that the two runs overlapped on the server.
    foreign = [f.json()["runs"][0]["foreign"] for f in results]
    assert sum(foreign) >= 150, foreign


@pytest.mark.parametrize(
    ("signum", "group", "code"),
    [
        pytest.param(signal.SIGINT, True, 130, id="ctrl-c-to-the-process-group"),
        pytest.param(signal.SIGTERM, False, 143, id="sigterm-to-the-supervisor"),
    ],
)
def test_a_signal_stops_the_run_with_a_partial_report(
    spawn: Spawner, signum: int, group: bool, code: int
) -> None:
    run = spawn.scaler(
        "run",
        "--strategy",
        "queue-group,in-subscription",
        "--procs",
        "2",
        "--messages",
        "100",
        "--work",
        "sleep:20ms",
        "--json",
        "-v",
    )
    server_pid = int(run.stderr.expect(SERVER_STARTED)[1])
    run.stderr.expect(PUBLISHED)

    run.send_signal(signum, group=group)
    finished = run.finish(RUN_TIMEOUT_S)

    assert finished.returncode == code, finished.stderr
    doc = finished.json()
    assert doc["exit_code"] == code
    assert [r["strategy"] for r in doc["runs"]] == ["queue-group"]
    result = doc["runs"][0]
    assert result["interrupted"]
    assert result["published"] == 100
    # Workers finish only what is in flight; what they held beyond that is lost.
    assert result["lost"] > 0
    assert result["lost"] == result["published"] - result["processed"]
    assert "partial results" in " ".join(doc["verdict"])
    assert "in-subscription" not in finished.stderr
    # The server outlived the workers: no client lost its connection.
    assert "NATS error" not in finished.stderr
    assert_no_traceback(finished)
    children = [server_pid, *pids_started(finished, "queue-group")]
    assert len(children) == 3
    assert not [pid for pid in children if pid_alive(pid)]


def test_an_unreachable_server_is_a_one_line_error_with_the_password_hidden(
    spawn: Spawner,
) -> None:
    # A port bound but not listening refuses connections, and nothing else
    # can take it while this socket holds it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        url = f"nats://user:secret@127.0.0.1:{port}"

        finished = spawn.run_scaler(
            "run", "--server", url, "--messages", "10", "--json", timeout_s=30
        )

    assert finished.returncode == 3
    assert finished.stdout == ""
    assert len(finished.stderr.splitlines()) == 1, finished.stderr
    assert finished.stderr.startswith(
        f"scaler: cannot connect to NATS at nats://user:***@127.0.0.1:{port}"
    )
    assert "secret" not in finished.stderr
    assert_no_traceback(finished)
