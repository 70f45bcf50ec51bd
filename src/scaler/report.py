"""Showing results: the progress bar, the comparison tables, the verdict, JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from scaler import __version__
from scaler.stats import RunResult
from scaler.supervisor import Strategy
from scaler.workload import Bound, WorkSpec

REPORT_WIDTH = 140  # columns, when stdout is not a terminal
CPU_BOUND_BUSY = 1.5  # slots busy in one process below which a handler computes


class ProgressBar:
    """Rich progress bars on stderr: one per strategy, and one for them all."""

    def __init__(self, console: Console, runs: int = 1) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._runs = runs
        self._task: TaskID | None = None
        self._overall: TaskID | None = None  # with several runs: messages settled
        self._settled = 0  # messages of the runs already over, processed or lost
        self._total = 0

    def start(self, strategy: Strategy, total: int) -> None:
        if not self._progress.live.is_started:
            self._progress.start()
        if self._runs > 1 and self._overall is None:
            label = f"all {self._runs} runs"
            self._overall = self._progress.add_task(label, total=self._runs * total)
        shape = f"{strategy.procs}×{strategy.limit}"
        label = shape if strategy.name == shape else f"{strategy.name} {shape}"
        self._task = self._progress.add_task(label, total=total)
        self._total = total

    def update(self, processed: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=processed)
        if self._overall is not None:
            self._progress.update(self._overall, completed=self._settled + processed)

    def stop(self) -> None:
        if self._task is not None:
            self._settled += self._total
            if self._overall is not None:
                self._progress.update(self._overall, completed=self._settled)
            self._progress.refresh()
        self._task = None

    def close(self) -> None:
        self._progress.stop()


def document(
    results: Sequence[RunResult], workload: dict[str, Any], exit_code: int
) -> dict[str, Any]:
    """The ``--json`` document."""
    return {
        "version": __version__,
        "workload": workload,
        "runs": [r.to_json() for r in results],
        "verdict": verdict(results, workload.get("work", "")),
        "exit_code": exit_code,
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def throughput_table(results: Sequence[RunResult]) -> Table:
    table = Table(title="Throughput", title_justify="left")
    for header in ("strategy", "procs×limit", "published", "processed", "lost"):
        table.add_column(header, justify="left" if header == "strategy" else "right")
    for header in ("wall s", "ideal s", "msg/s", "eff. conc.", "efficiency"):
        table.add_column(header, justify="right")
    show_errors = any(r.errors for r in results)
    if show_errors:
        table.add_column("errors", justify="right")
    for r in results:
        lost = f"[bold red]{r.lost:,}[/]" if r.lost else "0"
        errors = [f"{r.errors:,}"] if show_errors else []
        table.add_row(
            r.strategy + (" (partial)" if r.interrupted or r.timed_out else ""),
            f"{r.procs}×{r.limit}",
            f"{r.published:,}",
            f"{r.processed:,}",
            lost,
            f"{r.wall_s:.2f}",
            f"{r.ideal_wall_s:.2f}",
            f"{r.throughput:,.0f}",
            f"{r.effective_concurrency:.1f}",
            f"{r.efficiency:.0%}",
            *errors,
        )
    return table


def detail_table(results: Sequence[RunResult]) -> Table:
    table = Table(title="Latency (end to end, ms) and processes", title_justify="left")
    table.add_column("strategy")
    for header in ("p50", "p90", "p99", "max", "msgs/proc", "max/mean"):
        table.add_column(header, justify="right")
    for header in ("CPU s", "RSS MB"):
        table.add_column(header, justify="right")
    for r in results:
        latency = r.latency_ms
        spread = r.spread
        table.add_row(
            r.strategy,
            _ms(latency["p50"]),
            _ms(latency["p90"]),
            _ms(latency["p99"]),
            _ms(latency["max"]),
            f"{spread['min']:,.0f}-{spread['max']:,.0f}",
            f"{spread['max_over_mean']:.2f}",
            f"{r.cpu_s:.2f}",
            f"{r.max_rss_mb:.0f}",
        )
    return table


def verdict(results: Sequence[RunResult], work: str) -> list[str]:
    """A few plain sentences on which strategy won and why, from the numbers."""
    ran = [r for r in results if r.processed]
    if not ran:
        return ["No strategy processed any message, so there is nothing to compare."]
    lines = []
    if any(r.interrupted or r.timed_out for r in results):
        lines.append("The run was cut short: these are partial results.")
    best = max(ran, key=lambda r: r.throughput)
    rest = sorted((r for r in ran if r is not best), key=lambda r: -r.throughput)
    shape = f"{best.procs}×{best.limit}"
    verb = "was fastest at" if rest else "ran at"
    head = f"{best.strategy} ({shape}) {verb} {best.throughput:,.0f} msg/s"
    if rest:
        runner = rest[0]
        ratio = (
            best.throughput / runner.throughput if runner.throughput else float("inf")
        )
        head += f", {ratio:.1f}× {runner.strategy} ({runner.throughput:,.0f} msg/s)"
    lines.append(head + ".")
    lines.append(_why(ran, work))
    lines.append(_gap(best))
    for r in results:
        if r.errors:
            lines.append(
                f"{r.strategy}: the work raised on {r.errors:,} messages "
                "(counted as errors, not lost)."
            )
        if r.lost:
            dead = (
                f"; workers that died: {', '.join(r.dead_workers)}"
                if r.dead_workers
                else ""
            )
            lines.append(
                f"{r.strategy} lost {r.lost:,} of {r.published:,} messages{dead}."
            )
    return lines


def _why(ran: Sequence[RunResult], work: str) -> str:
    """Why the numbers came out as they did, for this kind of work."""
    by_name = {r.strategy: r for r in ran}
    try:
        bound = WorkSpec.parse(work).bound
    except ValueError:
        bound = None
    inproc = by_name.get("in-subscription")
    procs = by_name.get("queue-group")
    if bound is Bound.NONE:
        return (
            "With no work per message, throughput measures the cost of handling "
            "messages itself: more slots cannot overlap anything."
        )
    if bound is Bound.CPU:
        text = (
            "The work is CPU-bound: a process runs one message's Python at a time, "
            "whatever its limit"
        )
        if inproc:
            text += (
                f"; {inproc.limit} in-subscription slots kept "
                f"{inproc.effective_concurrency:.1f} busy on average"
            )
        if procs:
            text += (
                f", {procs.procs} processes kept {procs.effective_concurrency:.1f} "
                f"busy on {os.cpu_count() or 1} cores"
            )
        return text + ". Only more processes, up to the cores, add throughput."
    if bound in (Bound.IO, Bound.MIXED):
        text = (
            "The work is I/O-bound: a message mostly waits, and waits overlap"
            if bound is Bound.IO
            else "The work both waits and computes: waits overlap, computing does not"
        )
        if inproc and procs:
            faster = inproc.throughput >= procs.throughput
            text += (
                f"; one process with {inproc.limit} slots kept "
                f"{inproc.effective_concurrency:.1f} busy, against "
                f"{procs.effective_concurrency:.1f} for {procs.procs} single-slot "
                f"processes, so concurrency inside the subscription "
                + ("did more than extra processes" if faster else "did less here")
            )
        return text + "."
    return _why_handler(inproc, procs)


def _why_handler(inproc: RunResult | None, procs: RunResult | None) -> str:
    """For a user's handler the numbers themselves tell what bounds it."""
    if inproc is None or inproc.limit < 2:
        return "The work is your handler; compare the rows to see what it rewards."
    busy = inproc.effective_concurrency
    text = f"Your handler: one process with {inproc.limit} slots kept {busy:.1f} busy"
    if busy < CPU_BOUND_BUSY:
        text += ", so it behaves CPU-bound: only more processes add throughput"
    else:
        text += ", so its waits overlap: concurrency inside the subscription pays"
    if procs is not None:
        text += (
            f" ({procs.procs} single-slot processes kept "
            f"{procs.effective_concurrency:.1f} busy)"
        )
    return text + "."


def _gap(r: RunResult) -> str:
    if r.wall_s <= 0 or r.ideal_wall_s <= 0:
        return f"{r.strategy} took {r.wall_s:.2f} s."
    uneven = max(r.distributed_wall_s - r.ideal_wall_s, 0.0)
    overhead = max(r.wall_s - max(r.distributed_wall_s, r.ideal_wall_s), 0.0)
    return (
        f"{r.strategy} took {r.wall_s:.2f} s against {r.ideal_wall_s:.2f} s for a "
        f"perfect dispatcher on {r.slots} slots: {uneven:.2f} s from "
        f"uneven distribution, {overhead:.2f} s of overhead "
        "(publishing, delivery, scheduling)."
    )


def stdout_console() -> Console:
    """A console for the report: wide enough for the tables even in a pipe."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, REPORT_WIDTH))
    return console


def print_report(console: Console, results: Sequence[RunResult], work: str) -> None:
    console.print(throughput_table(results))
    console.print(detail_table(results))
    for line in verdict(results, work):
        console.print(line, highlight=False)
