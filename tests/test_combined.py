"""Reading the combined output of a Procfile manager: ``scaler report``.

The samples in tests/data were captured from real honcho and foreman
runs of real workers (see tests/data/procfile/capture.py), through a
pipe and on a pseudo-terminal.  The synthetic streams below are built
from records made with scaler.protocol.encode, in the same line format.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from array import array
from pathlib import Path
from typing import IO

import pytest

from scaler import protocol
from scaler.combined import (
    CombinedLog,
    aggregate,
    read_records,
    report_main,
    split_prefix,
)
from scaler.errors import ExitCode
from scaler.protocol import Counters, Progress, Published, Ready, Record, Summary

DATA = Path(__file__).parent / "data"
SAMPLES = ["honcho-piped", "honcho-tty", "foreman-piped", "foreman-tty"]
SAMPLE_PROCESSES = {"system", "nats.1", "worker.1", "worker.2", "load.1"}
SAMPLE_MESSAGES = 40  # scaler load --messages, in tests/data/procfile/Procfile
SUBPROCESS_TIMEOUT_S = 30.0

RUN = "0123abcd"
T0 = 1_700_000_000_000_000_000  # ns: when the synthetic runs start publishing
MS = 1_000_000  # ns


def sample_lines(name: str) -> list[str]:
    """A captured sample's lines, endings and colour codes as they were."""
    return (DATA / f"{name}.log").read_bytes().decode().splitlines(keepends=True)


# --- building synthetic combined output -------------------------------------------


def line(name: str, text: str, clock: str = "16:07:12", width: int = 8) -> str:
    """One line as honcho or foreman print it through a pipe."""
    return f"{clock} {name:<{width}} | {text}\n"


def coloured(name: str, text: str, colour: int = 36, width: int = 8) -> str:
    """One line as honcho prints it on a terminal."""
    return f"\x1b[0m\x1b[{colour}m16:07:12 {name:<{width}} | \x1b[0m{text}\r\n"


def rec(record: Record) -> str:
    return protocol.encode(record)


def done(*seqs: int, service_us: int = 10_000) -> str:
    pairs = array("I")
    for seq in seqs:
        pairs.extend((seq, service_us))
    return protocol.encode_done(pairs)


def ready(worker: str, pid: int, host: str = "a", limit: int = 5) -> Ready:
    return Ready(worker, pid, "", limit, host)


def progress(
    worker: str, seqs: range, last_done_ns: int, host: str = "a", run: str = RUN
) -> Progress:
    counters = Counters(received=len(seqs), processed=len(seqs))
    return Progress(
        worker, run, counters, done=done(*seqs), last_done_ns=last_done_ns, host=host
    )


def summary(
    worker: str,
    pid: int,
    seqs: range,
    last_done_ns: int,
    host: str = "a",
    limit: int = 5,
    run: str = RUN,
) -> Summary:
    counters = Counters(received=len(seqs), processed=len(seqs))
    return Summary(
        worker,
        pid,
        run,
        counters,
        limit=limit,
        done=done(*seqs),
        first_done_ns=T0 + MS,
        last_done_ns=last_done_ns,
        host=host,
    )


def published(count: int, run: str = RUN, workers: int = 2) -> Published:
    return Published(run, count, T0, T0 + 2 * MS, "greet.joe", "sleep:10ms", workers)


def killed_worker_stream() -> list[str]:
    """Ten messages: worker.1 does 0-4 and exits; worker.2 does 5-7 and is killed.

    worker.2's summary is cut off as the last line of a truncated file.
    Six lines are not records.
    """
    cut_summary = rec(summary("worker.2", 102, range(5, 8), T0 + 90 * MS))[:60]
    return [
        line("system", "worker.1 started (pid=101)"),
        line("system", "worker.2 started (pid=102)"),
        line("load.1", rec(published(10))),
        line("worker.1", rec(ready("worker.1", 101))),
        line("worker.1", "INFO scaler.worker: worker.1 ready (pid=101, limit=5)"),
        line("worker.2", rec(ready("worker.2", 102))),
        line("worker.2", rec(progress("worker.2", range(5, 8), T0 + 80 * MS))),
        line("worker.1", rec(progress("worker.1", range(0, 3), T0 + 30 * MS))),
        line("load.1", "published 10 messages"),
        line("system", "sending SIGTERM to worker.2 (pid 102)"),
        line("worker.1", rec(summary("worker.1", 101, range(3, 5), T0 + 50 * MS))),
        line("system", "worker.1 stopped (rc=0)"),
        line("worker.2", cut_summary),
    ]


def write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(lines))
    return str(path)


# --- the prefix parser -------------------------------------------------------------


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_line_of_a_captured_sample_is_split_into_process_and_text(
    sample: str,
) -> None:
    names = set()
    for raw in sample_lines(sample):
        name, text = split_prefix(raw)
        names.add(name)
        assert "\x1b" not in text and "\r" not in text and "\n" not in text
        assert not re.match(r"\d\d:\d\d:\d\d ", text)
    assert names - {None} == SAMPLE_PROCESSES


def test_output_foreman_prints_after_a_process_exited_names_no_process() -> None:
    blank = [raw for raw in sample_lines("foreman-piped") if "          | " in raw]

    assert blank, "the sample has lines with a blank name"
    for raw in blank:
        name, text = split_prefix(raw)
        assert name is None
        assert text.startswith("[") and "[INF]" in text  # nats-server's log


@pytest.mark.parametrize("sample", SAMPLES)
def test_record_text_from_a_captured_sample_is_exactly_the_json_a_process_wrote(
    sample: str,
) -> None:
    texts = [split_prefix(raw)[1] for raw in sample_lines(sample)]
    records = [json.loads(t) for t in texts if t.startswith(protocol.MARKER)]

    kinds = {r["kind"] for r in records}
    assert kinds == {"ready", "progress", "summary", "published"}
    for text in texts:
        if text.startswith(protocol.MARKER):
            assert protocol.decode(text) is not None


@pytest.mark.parametrize("sample", ["honcho-tty", "foreman-tty"])
def test_terminal_samples_really_carry_colour_codes(sample: str) -> None:
    raw = sample_lines(sample)

    assert sum("\x1b[" in r for r in raw) == len(raw) - (
        # honcho leaves its own "system" lines uncoloured
        sum(split_prefix(r)[0] == "system" for r in raw) if "honcho" in sample else 0
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("16:07:12 worker.1 | hello\n", ("worker.1", "hello")),
        ("16:07:12 load.1   | hello\n", ("load.1", "hello")),
        ("16:07:12 system   | a | b\n", ("system", "a | b")),
        ("16:07:12 worker.10 | \n", ("worker.10", "")),
        ("16:07:12          | late\n", (None, "late")),
        ("\x1b[0m\x1b[36m16:07:12 web.1 | \x1b[0mhi\r\n", ("web.1", "hi")),
        ("\x1b[36m16:07:12 web.1 | \x1b[0mhi\r\n", ("web.1", "hi")),
        ("\x1b[1;31m16:07:12 web.1 |  two spaces\n", ("web.1", " two spaces")),
        ("plain output\n", (None, "plain output")),
        ("web.1 | no clock\n", (None, "web.1 | no clock")),
        ("16:07 web.1 | short clock", (None, "16:07 web.1 | short clock")),
        ("", (None, "")),
    ],
)
def test_prefix_parser_handles_padding_colour_and_lines_without_a_prefix(
    raw: str, expected: tuple[str | None, str]
) -> None:
    assert split_prefix(raw) == expected


# --- the reader ----------------------------------------------------------------


def test_reader_picks_records_out_of_log_and_manager_lines() -> None:
    log = read_records(killed_worker_stream())

    assert log.lines == 13
    assert log.other_lines == 6
    assert log.damaged == 1
    kinds = [r.kind for r in log.records]
    assert kinds == ["published", "ready", "ready", "progress", "progress", "summary"]


def test_a_truncated_last_line_is_counted_as_damaged_with_where_it_was() -> None:
    log = read_records(killed_worker_stream(), source="host-a.log")

    assert log.damaged == 1
    assert log.problems[0].startswith("host-a.log:13: unreadable record")


def test_reader_reads_records_under_colour_codes_and_crlf() -> None:
    lines = [
        coloured("load.1", rec(published(2, workers=1)), colour=32),
        coloured("worker.1", rec(ready("worker.1", 101))),
        coloured("worker.1", rec(summary("worker.1", 101, range(2), T0 + 9 * MS))),
    ]

    log = read_records(lines)

    assert [r.kind for r in log.records] == ["published", "ready", "summary"]
    assert log.damaged == 0


@pytest.mark.parametrize(
    "bad",
    [
        '{"scaler":1,"kind":"progress","worker":"w"',
        '{"scaler":2,"kind":"ready","worker":"w","pid":1}',
        '{"scaler":1,"kind":"nonsense"}',
        '{"scaler":1,"kind":["a list"]}',
        '{"scaler":1,"kind":"ready","worker":"w","pid":"one"}',
        '{"scaler":1,"kind":"ready","worker":"w","pid":-1}',
        '{"scaler":1,"kind":"ready","worker":{"a":1},"pid":1}',
        '{"scaler":1,"kind":"published","run":"r","count":"9","started_ns":0,'
        '"finished_ns":0}',
        '{"scaler":1,"kind":"published","run":"r","count":1e300,"started_ns":0,'
        '"finished_ns":0}',
        '{"scaler":1,"kind":"published","run":"r","count":99999999999,'
        '"started_ns":0,"finished_ns":0}',
        '{"scaler":1,"kind":"progress","worker":"w","run":"r","counters":[1]}',
        '{"scaler":1,"kind":"progress","worker":"w","run":"r",'
        '"counters":{"received":"x"}}',
        '{"scaler":1,"kind":"ready","worker":"w","pid":1,"x":' + "[" * 100_000,
    ],
)
def test_a_damaged_record_is_counted_and_never_raises(bad: str) -> None:
    log = read_records([line("worker.1", bad)])

    assert (log.damaged, log.records, log.other_lines) == (1, [], 0)


# --- accounting ------------------------------------------------------------------


def test_a_killed_worker_shows_as_died_and_its_reported_messages_count() -> None:
    found = aggregate(read_records(killed_worker_stream()))

    assert len(found.runs) == 1
    result = found.runs[0].result
    assert (result.published, result.processed, result.lost) == (10, 8, 2)
    assert result.dead_workers == ["worker.2"]
    assert [p.processed for p in result.processes] == [5, 3]
    assert [p.died for p in result.processes] == [False, True]
    assert result.strategy == "procfile"
    assert (result.procs, result.limit) == (2, 5)
    assert found.exit_code is ExitCode.LOST
    warnings = found.all_warnings
    assert any("damaged" in w for w in warnings)
    assert any("worker.2 wrote no summary" in w for w in warnings)


def test_wall_time_runs_from_the_first_publish_to_the_last_completion() -> None:
    found = aggregate(read_records(killed_worker_stream()))

    # worker.2's last progress said 80 ms; its summary (90 ms) was cut off
    assert found.runs[0].result.wall_s == pytest.approx(0.080)


def test_messages_done_twice_count_once_and_as_duplicates() -> None:
    lines = [
        line("load.1", rec(published(4))),
        line("worker.1", rec(summary("worker.1", 1, range(0, 3), T0 + 5 * MS))),
        line("worker.2", rec(summary("worker.2", 2, range(2, 4), T0 + 6 * MS))),
    ]

    result = aggregate(read_records(lines)).runs[0].result

    assert (result.processed, result.lost, result.duplicates) == (4, 0, 1)
    assert [p.processed for p in result.processes] == [3, 1]


def test_every_message_done_once_is_ok() -> None:
    lines = [
        line("worker.1", rec(ready("worker.1", 1))),
        line("worker.2", rec(ready("worker.2", 2))),
        line("load.1", rec(published(4))),
        line("worker.1", rec(summary("worker.1", 1, range(0, 2), T0 + 5 * MS))),
        line("worker.2", rec(summary("worker.2", 2, range(2, 4), T0 + 6 * MS))),
    ]

    found = aggregate(read_records(lines))

    assert found.exit_code is ExitCode.OK
    assert found.all_warnings == []
    assert found.runs[0].work == "sleep:10ms"


def test_same_worker_names_on_two_hosts_are_two_workers() -> None:
    lines = [
        line("load.1", rec(published(4))),
        line("worker.1", rec(summary("worker.1", 7, range(0, 2), T0 + 5 * MS, "a"))),
        line("worker.1", rec(summary("worker.1", 7, range(2, 4), T0 + 6 * MS, "b"))),
    ]

    result = aggregate(read_records(lines)).runs[0].result

    assert result.procs == 2
    assert [p.name for p in result.processes] == ["worker.1@a", "worker.1@b"]
    assert (result.processed, result.lost, result.duplicates) == (4, 0, 0)


def test_workers_are_listed_in_numeric_order() -> None:
    names = [f"worker.{n}" for n in (10, 2, 1)]
    lines = [line("load.1", rec(published(3, workers=3)))] + [
        line(name, rec(summary(name, i, range(i, i + 1), T0 + MS)))
        for i, name in enumerate(names)
    ]

    result = aggregate(read_records(lines)).runs[0].result

    assert [p.name for p in result.processes] == ["worker.1", "worker.2", "worker.10"]


def test_a_worker_that_served_nothing_still_counts_as_one_of_the_processes() -> None:
    idle_summary = Summary("worker.2", 2, "", Counters(), limit=5, host="a")
    lines = [
        line("worker.1", rec(ready("worker.1", 1))),
        line("worker.2", rec(ready("worker.2", 2))),
        line("load.1", rec(published(3))),
        line("worker.1", rec(summary("worker.1", 1, range(3), T0 + 5 * MS))),
        line("worker.2", rec(idle_summary)),
    ]

    found = aggregate(read_records(lines))

    result = found.runs[0].result
    assert result.procs == 2
    assert [p.processed for p in result.processes] == [3, 0]
    assert result.spread["max_over_mean"] == 2.0
    assert found.exit_code is ExitCode.OK


def test_without_a_published_record_the_count_is_inferred_and_said_so() -> None:
    lines = [
        line("worker.1", rec(summary("worker.1", 1, range(0, 3), T0 + 5 * MS))),
        line("worker.2", rec(summary("worker.2", 2, range(5, 7), T0 + 6 * MS))),
    ]

    found = aggregate(read_records(lines))

    run = found.runs[0]
    assert not run.published_known
    assert (run.result.published, run.result.processed) == (7, 5)
    assert run.result.lost == 2
    assert any("no published record" in w for w in found.all_warnings)


def test_different_limits_are_reported_as_the_largest_with_a_warning() -> None:
    lines = [
        line("load.1", rec(published(2))),
        line("worker.1", rec(summary("worker.1", 1, range(1), T0 + MS, limit=5))),
        line("worker.2", rec(summary("worker.2", 2, range(1, 2), T0 + MS, limit=9))),
    ]

    found = aggregate(read_records(lines))

    assert found.runs[0].result.limit == 9
    assert [w for w in found.all_warnings if "different limits (5, 9)" in w]


def test_a_log_of_two_runs_gives_two_results_and_leaves_idle_workers_out() -> None:
    other = "fedcba98"
    lines = [
        line("load.1", rec(published(2))),
        line("load.1", rec(published(1, run=other, workers=1))),
        line("worker.1", rec(summary("worker.1", 1, range(2), T0 + MS))),
        line("worker.2", rec(summary("worker.2", 2, range(1), T0 + MS, run=other))),
        line("worker.3", rec(ready("worker.3", 3))),
    ]

    found = aggregate(read_records(lines))

    assert [r.run for r in found.runs] == [RUN, other]
    assert [r.result.strategy for r in found.runs] == [
        f"procfile {RUN}",
        f"procfile {other}",
    ]
    assert [r.result.processed for r in found.runs] == [2, 1]
    assert any("served no run" in w and "worker.3@a" in w for w in found.warnings)


def test_the_publisher_seeing_more_workers_than_the_input_is_a_warning() -> None:
    lines = [
        line("load.1", rec(published(2, workers=3))),
        line("worker.1", rec(summary("worker.1", 1, range(2), T0 + MS))),
    ]

    found = aggregate(read_records(lines))

    assert any("publisher saw 3 workers" in w for w in found.all_warnings)


def test_a_published_run_no_worker_reported_on_is_lost() -> None:
    other = "fedcba98"
    lines = [
        line("load.1", rec(published(2))),
        line("load.1", rec(published(5, run=other))),
        line("worker.1", rec(summary("worker.1", 1, range(2), T0 + MS))),
    ]

    found = aggregate(read_records(lines))

    assert found.unserved_runs == [other]
    assert found.exit_code is ExitCode.LOST


def test_a_real_sample_accounts_for_every_message() -> None:
    found = aggregate(read_records(sample_lines("honcho-piped")))

    result = found.runs[0].result
    assert (result.published, result.processed, result.lost) == (
        SAMPLE_MESSAGES,
        SAMPLE_MESSAGES,
        0,
    )
    assert (result.procs, result.limit, result.dead_workers) == (2, 5, [])
    assert found.all_warnings == []
    assert found.exit_code is ExitCode.OK


def test_a_real_sample_without_a_workers_summary_shows_it_died() -> None:
    lines = [
        raw
        for raw in sample_lines("foreman-piped")
        if not ('"kind":"summary"' in raw and '"worker":"worker.1"' in raw)
    ]

    found = aggregate(read_records(lines))

    result = found.runs[0].result
    assert result.dead_workers == ["worker.1"]
    assert result.processed == SAMPLE_MESSAGES  # its progress reported them all
    assert found.exit_code is ExitCode.LOST


# --- merging ---------------------------------------------------------------------


def test_the_same_input_read_twice_counts_every_message_once() -> None:
    log = CombinedLog()
    log.read(sample_lines("honcho-tty"), "first")
    log.read(sample_lines("honcho-tty"), "second")

    found = aggregate(log)

    result = found.runs[0].result
    assert (result.processed, result.lost, result.duplicates) == (40, 0, 0)
    assert result.procs == 2
    assert log.repeated > 0
    assert any("more than once" in w for w in found.warnings)


def test_logs_of_two_hosts_merge_into_one_run() -> None:
    host_a = [
        line("load.1", rec(published(6, workers=4))),
        line("worker.1", rec(ready("worker.1", 1, "a"))),
        line("worker.1", rec(summary("worker.1", 1, range(0, 2), T0 + MS, "a"))),
        line("worker.2", rec(summary("worker.2", 2, range(2, 3), T0 + MS, "a"))),
    ]
    host_b = [
        line("worker.1", rec(ready("worker.1", 1, "b"))),
        line("worker.1", rec(summary("worker.1", 1, range(3, 5), T0 + MS, "b"))),
        line("worker.2", rec(progress("worker.2", range(5, 6), T0 + MS, "b"))),
    ]
    log = CombinedLog()
    log.read(host_a, "host-a.log")
    log.read(host_b, "host-b.log")

    found = aggregate(log)

    result = found.runs[0].result
    assert result.procs == 4
    assert (result.published, result.processed, result.lost) == (6, 6, 0)
    assert result.dead_workers == ["worker.2@b"]


def test_samples_of_two_separate_runs_stay_two_runs() -> None:
    log = CombinedLog()
    log.read(sample_lines("honcho-piped"), "honcho")
    log.read(sample_lines("foreman-piped"), "foreman")

    found = aggregate(log)

    assert [r.result.processed for r in found.runs] == [40, 40]
    assert found.warnings == []


# --- report_main -----------------------------------------------------------------


def test_report_prints_the_tables_and_exits_ok_for_a_complete_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = report_main([str(DATA / "honcho-piped.log")], json_output=False)

    out, err = capsys.readouterr()
    assert code == ExitCode.OK
    assert "Throughput" in out and "procfile" in out
    assert err == ""


def test_report_json_is_the_run_document(capsys: pytest.CaptureFixture[str]) -> None:
    code = report_main([str(DATA / "foreman-tty.log")], json_output=True)

    doc = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert doc["exit_code"] == 0
    assert doc["runs"][0]["processed"] == SAMPLE_MESSAGES
    assert doc["workload"]["runs"][0]["published_known"] is True
    assert doc["warnings"] == []


def test_report_exits_lost_with_one_line_per_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "combined.log", killed_worker_stream())

    code = report_main([path], json_output=False)

    err = capsys.readouterr().err.splitlines()
    assert code == ExitCode.LOST
    assert len(err) == 2
    assert all(e.startswith("scaler: warning: ") for e in err)


def test_report_merges_files_without_counting_a_repeated_file_twice(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(DATA / "honcho-piped.log")

    code = report_main([path, path], json_output=True)

    doc = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK
    assert len(doc["runs"]) == 1
    assert doc["runs"][0]["processed"] == SAMPLE_MESSAGES
    assert doc["runs"][0]["duplicates"] == 0


def test_report_on_a_missing_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    present = str(DATA / "honcho-piped.log")
    missing = str(tmp_path / "nope.log")

    code = report_main([present, missing], json_output=False)

    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE
    assert out == ""
    assert err == f"scaler: no such file: {missing}\n"


def test_report_on_a_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = report_main([str(tmp_path)], json_output=False)

    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.startswith("scaler: cannot read") and err.count("\n") == 1


def test_report_without_worker_records_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "combined.log",
        [line("web.1", "GET / 200"), line("worker.1", '{"scaler":1,"kind":"rea')],
    )

    code = report_main([path], json_output=True)

    out, err = capsys.readouterr()
    assert code == ExitCode.INPUT
    assert out == ""
    assert err.splitlines()[-1] == f"scaler: no worker records in {path}"
    assert "1 damaged record lines" in err


def report_in_a_child(
    stdin: int | IO[bytes], json_output: bool
) -> subprocess.CompletedProcess[bytes]:
    """report_main([]) in a fresh interpreter, with ``stdin`` as its stdin."""
    program = (
        "import sys; from scaler.combined import report_main; "
        f"sys.exit(report_main([], json_output={json_output}))"
    )
    return subprocess.run(
        [sys.executable, "-c", program],
        stdin=stdin,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


def test_report_reads_stdin_when_no_file_is_named() -> None:
    with (DATA / "honcho-tty.log").open("rb") as stdin:
        done = report_in_a_child(stdin, json_output=True)

    assert done.returncode == ExitCode.OK, done.stderr
    assert json.loads(done.stdout)["runs"][0]["processed"] == SAMPLE_MESSAGES


def test_report_with_no_file_and_a_terminal_on_stdin_is_a_usage_error() -> None:
    leader, follower = pty.openpty()
    try:
        done = report_in_a_child(follower, json_output=False)
    finally:
        os.close(follower)
        os.close(leader)

    assert done.returncode == ExitCode.USAGE
    assert done.stderr.decode().count("\n") == 1
