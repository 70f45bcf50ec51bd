"""``scaler report``: accounting for runs from the combined output of processes.

Under a Procfile manager (honcho, foreman) the workers and ``scaler
load`` are not children of one supervisor: their output arrives as one
stream, each line prefixed with the time and the process name, stderr
mixed in, plus the manager's own lines.  This module reads such streams,
one or several (say, one per host), in four steps:

1. :func:`split_prefix` takes a line apart into process name and text;
2. :func:`read_records` picks out the protocol records and counts the
   rest (log lines, damaged records);
3. :func:`aggregate` groups the records by run and accounts for each run
   as ``scaler run`` does, through :mod:`scaler.stats`;
4. :func:`report_main` does all that for files or stdin and prints the
   same tables and verdict as ``scaler run``.

Which records belong together:

- A worker is known by its host and name (``worker.1`` repeats across
  hosts).  Its ``ready`` record and the ``progress`` records it writes
  before its first message carry no run id; they belong to the run its
  next record names.  A worker that never served any run is counted in
  the run when the input holds exactly one run, and left out (with a
  warning) when it holds several.
- A record identical to one already read is a copy, not news: it is
  counted once.  So the same file given twice, or two files that overlap,
  count every message once.  Two different records are never identical:
  a worker reports each completed message in exactly one ``done`` batch,
  and ``ready``, ``summary`` and ``published`` records carry a pid or a
  time.  Only idle ``progress`` records repeat, and they carry nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from scaler import payload, protocol, report
from scaler.errors import ExitCode
from scaler.protocol import (
    Progress,
    ProtocolError,
    Published,
    Ready,
    Record,
    Summary,
)
from scaler.stats import Ledger, RunResult, WorkerOutcome, summarize

STRATEGY = "procfile"  # the strategy column of every run read from a log
PROBLEMS_KEPT = 3  # damaged lines quoted in a warning; the rest are counted

# honcho and foreman: "HH:MM:SS name | text", the name padded with spaces.
# foreman leaves the name blank for output that arrives after a process exited.
_PREFIX = re.compile(r"(\d{2}:\d{2}:\d{2}) ([^\s|]*) *\| ")
# On a terminal both colour the prefix and reset the colour after it.
_SGR = re.compile(r"(?:\x1b\[[0-9;]*m)+")
_DIGITS = re.compile(r"(\d+)")


def split_prefix(line: str) -> tuple[str | None, str]:
    """The process name from a Procfile manager's prefix, and the text after it.

    Colour codes around the prefix and the line ending are removed; the
    name is None when the line has no prefix, or a prefix with no name.
    """
    text = line.rstrip("\r\n")
    start = _skip_colour(text, 0)
    match = _PREFIX.match(text, start)
    if match is None:
        return None, text[start:]
    return match[2] or None, text[_skip_colour(text, match.end()) :]


def _skip_colour(text: str, position: int) -> int:
    match = _SGR.match(text, position)
    return match.end() if match else position


# --- reading ------------------------------------------------------------------


@dataclass
class CombinedLog:
    """The protocol records read from combined output, and what else was there."""

    records: list[Record] = field(default_factory=list)
    lines: int = 0
    other_lines: int = 0  # log lines, the manager's own lines, anything not ours
    damaged: int = 0  # lines that start a record but cannot be read as one
    repeated: int = 0  # records read before, with data in them; counted once
    problems: list[str] = field(default_factory=list)  # where, and what was wrong
    _seen: set[bytes] = field(default_factory=set, repr=False)

    def read(self, lines: Iterable[str], source: str = "-") -> None:
        """Add the records on ``lines``; ``source`` names them in problems."""
        for number, line in enumerate(lines, 1):
            self.lines += 1
            _, text = split_prefix(line)
            if protocol.MARKER not in text:
                self.other_lines += 1
                continue
            try:
                record = _decode(text)
            except ProtocolError as exc:
                self._damage(f"{source}:{number}: {exc}")
                continue
            if record is None:
                self.other_lines += 1
            elif self._is_new(text, record):
                self.records.append(record)

    def _damage(self, problem: str) -> None:
        self.damaged += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(problem)

    def _is_new(self, text: str, record: Record) -> bool:
        body = text[text.index(protocol.MARKER) :].rstrip()
        digest = hashlib.blake2b(body.encode(), digest_size=16).digest()
        if digest not in self._seen:
            self._seen.add(digest)
            return True
        if not (isinstance(record, Progress) and not record.done):
            self.repeated += 1
        return False


def read_records(lines: Iterable[str], source: str = "-") -> CombinedLog:
    """The records in one stream of combined output; never raises on bad lines."""
    log = CombinedLog()
    log.read(lines, source)
    return log


def _decode(text: str) -> Record | None:
    """protocol.decode, with a bound on the count a record may claim."""
    record = protocol.decode(text)
    if isinstance(record, Published) and record.count > payload.MAX_MESSAGES:
        raise ProtocolError(
            f"a count of {record.count:,} is past {payload.MAX_MESSAGES:,}"
        )
    return record


# --- grouping by run ------------------------------------------------------------


@dataclass
class _Worker:
    """One worker's records within one run."""

    host: str
    name: str
    ready: Ready | None = None
    progress: Progress | None = None  # the latest
    summary: Summary | None = None
    done: list[str] = field(default_factory=list)  # encoded batches, in order
    pids: set[int] = field(default_factory=set)
    first_done_ns: int = 0  # the earliest completion time its records give

    def add(self, record: Ready | Progress | Summary) -> None:
        if isinstance(record, Ready):
            self.ready = record
            self.pids.add(record.pid)
            return
        if record.done:
            self.done.append(record.done)
            first = (
                record.first_done_ns
                if isinstance(record, Summary)
                else record.last_done_ns
            )
            if first and (not self.first_done_ns or first < self.first_done_ns):
                self.first_done_ns = first
        if isinstance(record, Progress):
            self.progress = record
        else:
            self.summary = record
            self.pids.add(record.pid)

    @property
    def limit(self) -> int | None:
        if self.summary is not None:
            return self.summary.limit
        return self.ready.limit if self.ready is not None else None

    @property
    def finished_idle(self) -> bool:
        """Wrote its summary without ever serving a run."""
        return self.summary is not None and not self.summary.run


@dataclass
class _Run:
    published: list[Published] = field(default_factory=list)
    workers: dict[tuple[str, str], _Worker] = field(default_factory=dict)


def _group(records: Iterable[Record]) -> tuple[dict[str, _Run], list[_Worker]]:
    """Records by run id, in order of first appearance; and the idle workers."""
    runs: dict[str, _Run] = {}
    waiting: dict[tuple[str, str], _Worker] = {}  # not serving a run yet
    idle: list[_Worker] = []
    for record in records:
        if isinstance(record, Published):
            runs.setdefault(record.run, _Run()).published.append(record)
            continue
        key = (record.host, record.worker)
        worker = waiting.get(key)
        if not record.run:
            if worker is None or _starts_anew(worker, record):
                if worker is not None:
                    idle.append(worker)
                worker = waiting[key] = _Worker(*key)
            worker.add(record)
            continue
        run = runs.setdefault(record.run, _Run())
        if key not in run.workers:
            if worker is not None and not worker.finished_idle:
                run.workers[key] = waiting.pop(key)
            else:
                run.workers[key] = _Worker(*key)
        run.workers[key].add(record)
    idle.extend(waiting.values())
    return runs, idle


def _starts_anew(worker: _Worker, record: Record) -> bool:
    """True when ``record`` comes from another process than ``worker``'s."""
    if worker.finished_idle:
        return True
    return isinstance(record, Ready) and bool(worker.pids - {record.pid})


# --- accounting -------------------------------------------------------------------


@dataclass
class RunReport:
    """One run's result, and what about it the reader should be told."""

    run: str
    result: RunResult
    work: str  # the work spec, as the publisher or the workers named it
    published_known: bool  # False: the count was inferred from the workers
    warnings: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Every run found in the input, and warnings that concern no one run."""

    runs: list[RunReport]
    warnings: list[str]
    unserved_runs: list[str]  # published, but no worker reported on them

    @property
    def exit_code(self) -> ExitCode:
        """OK, or LOST when a message was lost or a worker died; INPUT: no runs."""
        if not self.runs:
            return ExitCode.INPUT
        results = [r.result for r in self.runs]
        if self.unserved_runs or any(r.lost or r.dead_workers for r in results):
            return ExitCode.LOST
        return ExitCode.OK

    @property
    def all_warnings(self) -> list[str]:
        return self.warnings + [w for r in self.runs for w in r.warnings]


def aggregate(log: CombinedLog, strategy: str = STRATEGY) -> Report:
    """Group ``log``'s records by run and account for each run.

    Each run's result is named ``strategy``, followed by the run id when
    there are several.
    """
    runs, idle = _group(log.records)
    warnings = _reading_warnings(log)
    if idle:
        names = ", ".join(_label(w) for w in idle)
        if len(runs) == 1:
            only = next(iter(runs.values()))
            for worker in idle:
                only.workers.setdefault((worker.host, worker.name), worker)
        elif runs:
            warnings.append(f"{len(idle)} workers served no run, left out: {names}")
        else:
            warnings.append(
                f"{len(idle)} workers reported, but no run was published or "
                f"served: {names}"
            )
    reports, unserved = [], []
    several = sum(bool(run.workers) for run in runs.values()) > 1
    for run_id, run in runs.items():
        if run.workers:
            name = f"{strategy} {run_id}" if several else strategy
            reports.append(_account(run_id, run, name))
        else:
            unserved.append(run_id)
            count = max(p.count for p in run.published)
            warnings.append(
                f"run {run_id}: {count:,} messages published, "
                "but no worker reported on the run"
            )
    return Report(reports, warnings, unserved)


def _reading_warnings(log: CombinedLog) -> list[str]:
    warnings = []
    if log.damaged:
        first = f"; first at {log.problems[0]}" if log.problems else ""
        warnings.append(f"{log.damaged} damaged record lines skipped{first}")
    if log.repeated:
        warnings.append(
            f"{log.repeated} records appeared more than once (overlapping or "
            "repeated input) and were counted once"
        )
    return warnings


def _account(run_id: str, run: _Run, name: str) -> RunReport:
    """Build the ledger of one run and summarize it as ``scaler run`` would."""
    warnings: list[str] = []
    workers = sorted(run.workers.values(), key=_worker_order)
    batches = [_done_batches(run_id, w, warnings) for w in workers]

    published, started_ns, finished_ns = _published(run_id, run, batches, warnings)
    ledger = Ledger(published)
    for index, worker_batches in enumerate(batches):
        for batch in worker_batches:
            ledger.add(index, batch)
    if ledger.unknown:
        warnings.append(
            f"run {run_id}: {ledger.unknown:,} completions of messages beyond the "
            f"{published:,} published were ignored"
        )

    limit = _run_limit(run_id, workers, warnings)
    qualify = len({w.host for w in workers}) > 1
    outcomes = [_outcome(w, limit, qualify) for w in workers]
    warnings += _worker_warnings(run_id, run, workers, outcomes)

    if not started_ns:
        started_ns = min(
            (w.first_done_ns for w in workers if w.first_done_ns), default=0
        )
    last_done = max((o.last_done_ns for o in outcomes), default=0)
    stopped_ns = max(finished_ns, last_done, started_ns)
    rate = max((p.rate for p in run.published), default=0.0)
    result = summarize(
        name, len(workers), limit, ledger, outcomes, started_ns, stopped_ns, rate=rate
    )
    return RunReport(run_id, result, _work(run, workers), bool(run.published), warnings)


def _worker_warnings(
    run_id: str, run: _Run, workers: Sequence[_Worker], outcomes: list[WorkerOutcome]
) -> list[str]:
    warnings = []
    expected = max((p.workers for p in run.published), default=0)
    if expected > len(workers):
        warnings.append(
            f"run {run_id}: the publisher saw {expected} workers ready, the input "
            f"has records of {len(workers)} (is a host's log missing?)"
        )
    for worker, outcome in zip(workers, outcomes, strict=True):
        if worker.summary is None:
            warnings.append(
                f"run {run_id}: {outcome.name} wrote no summary (killed?); its "
                "messages up to its last progress record are counted"
            )
        if len(worker.pids) > 1:
            pids = ", ".join(str(p) for p in sorted(worker.pids))
            warnings.append(
                f"run {run_id}: {outcome.name} is several processes (pids {pids}); "
                "their records are counted as one worker's"
            )
    return warnings


def _done_batches(
    run_id: str, worker: _Worker, warnings: list[str]
) -> list[array[int]]:
    batches = []
    for text in worker.done:
        try:
            batches.append(protocol.decode_done(text))
        except ProtocolError as exc:
            warnings.append(f"run {run_id}: {_label(worker)}: {exc}; batch skipped")
    return batches


def _published(
    run_id: str, run: _Run, batches: list[list[array[int]]], warnings: list[str]
) -> tuple[int, int, int]:
    """The published count, the first publish and the last flush, in ns.

    Without a ``published`` record the count is one more than the highest
    sequence number any worker completed, which hides loss at the end,
    and the start time is unknown (0).
    """
    if run.published:
        counts = {p.count for p in run.published}
        if len(counts) > 1:
            warnings.append(
                f"run {run_id}: published records disagree on the count "
                f"({', '.join(f'{c:,}' for c in sorted(counts))}); using the largest"
            )
        return (
            max(counts),
            min(p.started_ns for p in run.published),
            max(p.finished_ns for p in run.published),
        )
    highest = max((max(b[0::2]) for worker in batches for b in worker if b), default=-1)
    highest = min(
        highest, payload.MAX_MESSAGES - 1
    )  # a wild number: the rest is unknown
    warnings.append(
        f"run {run_id}: no published record; assuming {highest + 1:,} messages "
        "(the highest sequence number seen + 1), so loss at the end goes unseen "
        "and the wall time starts at the first completion"
    )
    return highest + 1, 0, 0


def _run_limit(run_id: str, workers: Sequence[_Worker], warnings: list[str]) -> int:
    limits = {w.limit for w in workers if w.limit is not None}
    if len(limits) > 1:
        warnings.append(
            f"run {run_id}: workers had different limits "
            f"({', '.join(str(n) for n in sorted(limits))}); reporting the largest"
        )
    return max(limits, default=1)


def _outcome(worker: _Worker, run_limit: int, qualify: bool) -> WorkerOutcome:
    pid = worker.summary.pid if worker.summary else None
    if pid is None and worker.ready is not None:
        pid = worker.ready.pid
    return WorkerOutcome(
        name=_label(worker) if qualify else worker.name,
        limit=worker.limit or run_limit,
        pid=pid,
        host=worker.host,
        summary=worker.summary,
        progress=worker.progress,
    )


def _work(run: _Run, workers: Sequence[_Worker]) -> str:
    for record in run.published:
        if record.work:
            return record.work
    for worker in workers:
        if worker.ready is not None and worker.ready.work:
            return worker.ready.work
    return ""


def _label(worker: _Worker) -> str:
    return f"{worker.name}@{worker.host}" if worker.host else worker.name


def _worker_order(worker: _Worker) -> tuple[str, list[Any]]:
    """By host, then by name with numbers in numeric order (worker.2 < worker.10)."""
    parts = _DIGITS.split(worker.name)
    return worker.host, [int(p) if p.isdigit() else p for p in parts]


# --- the command -------------------------------------------------------------------


class _InputError(Exception):
    """A path that cannot be read; ends the command with ExitCode.USAGE."""


def report_main(paths: list[str], json_output: bool) -> int:
    """Report on the runs in ``paths`` (stdin when empty, or for ``-``).

    Prints the tables and verdict of ``scaler run``, or its JSON document;
    warnings go to stderr, one line each.  Returns the exit code: OK; LOST
    when a message was lost or a worker died; INPUT when there is no
    worker record; USAGE when a path cannot be read.
    """
    try:
        log = _read_all(paths)
        found = aggregate(log)
    except _InputError as exc:
        _say(str(exc))
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.SIGINT
    for warning in found.all_warnings:
        _say(f"warning: {warning}")
    code = found.exit_code
    if code is ExitCode.INPUT:
        _say(f"no worker records in {', '.join(paths) or 'stdin'}")
        return code
    results = [r.result for r in found.runs]
    if json_output:
        doc = report.document(results, _describe(found, log, paths), int(code))
        doc["warnings"] = found.all_warnings
        print(report.dumps(doc))
    else:
        report.print_report(report.stdout_console(), results, found.runs[0].work)
    return code


def _read_all(paths: list[str]) -> CombinedLog:
    """Open every path first, so that a bad one fails before any reading."""
    log = CombinedLog()
    with contextlib.ExitStack() as stack:
        streams = []
        for path in paths or ["-"]:
            stream = _open(path)
            if path != "-":
                stack.enter_context(stream)
            streams.append((path, stream))
        for path, stream in streams:
            try:
                log.read(stream, "stdin" if path == "-" else path)
            except OSError as exc:
                raise _InputError(f"cannot read {path}: {exc.strerror}") from None
    return log


def _open(path: str) -> TextIO:
    if path == "-":
        stdin = sys.stdin
        if stdin is None or stdin.isatty():
            raise _InputError("name log files, or pipe the combined output in")
        if isinstance(stdin, io.TextIOWrapper):
            stdin.reconfigure(errors="replace")
        return stdin
    try:
        return open(path, encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise _InputError(f"no such file: {path}") from None
    except OSError as exc:
        raise _InputError(f"cannot read {path}: {exc.strerror}") from None


def _say(message: str) -> None:
    print(f"scaler: {message}", file=sys.stderr)


def _describe(found: Report, log: CombinedLog, paths: list[str]) -> dict[str, Any]:
    """The JSON document's ``workload``: where the records came from."""
    return {
        "sources": paths or ["-"],
        "work": found.runs[0].work,
        "runs": [
            {
                "run": r.run,
                "strategy": r.result.strategy,
                "work": r.work,
                "published_known": r.published_known,
            }
            for r in found.runs
        ],
        "unserved_runs": found.unserved_runs,
        "lines": log.lines,
        "other_lines": log.other_lines,
        "damaged_lines": log.damaged,
        "repeated_records": log.repeated,
    }
