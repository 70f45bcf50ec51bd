"""``scaler sweep``: the grid of shapes, the recommendation, its JSON and table.

Pure functions and plain data: no I/O, no event loop.  The supervisor
runs the cells that :func:`grid` returns like any other strategies.

A grid axis (``--procs``, ``--limit``) is a comma-separated list of
items, each one of:

- ``N``: one value, as in ``8``;
- ``A-B``: every whole number from A to B, both included, as in ``1-4``;
- ``A-B:xK``: A, A·K, A·K², ... up to B, as in ``1-64:x2`` for 1, 2, 4,
  ..., 64.  B is included only when the progression reaches it, so
  ``1-100:x2`` ends at 64.

Values must be whole numbers of at least 1.  The axis is the sorted set
of every item's values (``8,1-4`` is 1, 2, 3, 4, 8), at most
``MAX_AXIS_VALUES`` of them.

The recommendation rule: a cell is eligible when it processed every
message it published, no worker died, the run was neither timed out
nor interrupted, and its handler did not fail more often than in the
other cells (by more than ``ERROR_MARGIN``) or for every message: a
handler that fails fast is not fast.  With a p99 bound, only eligible
cells whose p99 latency is within the bound remain; when none is,
nothing is recommended and the reason names the lowest p99 seen, since
a bound the user set is not ours to relax.  Among the remaining cells, those within
``BAND`` (5 %) of the best throughput are equally good; the cheapest of
them wins: the fewest processes, then the smallest limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table

from scaler import __version__
from scaler.stats import RunResult
from scaler.supervisor import Strategy

BAND = 0.05  # throughput within this fraction of the best is as good as the best
ERROR_MARGIN = 0.01  # error rate above the lowest cell's that marks a broken cell
MAX_AXIS_VALUES = 64  # more cells than anyone can wait for on one machine

_NUMBER = "([0-9]{1,9})"  # nine digits: far past any useful value
_ITEM = re.compile(rf"^{_NUMBER}(?:-{_NUMBER}(?::x{_NUMBER})?)?$")


class AxisError(ValueError):
    """A ``--procs`` or ``--limit`` value that does not follow the grammar."""


def parse_axis(text: str) -> list[int]:
    """The sorted, distinct values of a grid axis such as ``1,2,4`` or ``1-64:x2``."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not all(items):
        raise AxisError(
            f"{_quote(text)} has an empty item: use values like 1,2,4 or 1-8"
        )
    values: set[int] = set()
    for item in items:
        values.update(_parse_item(item))
        if len(values) > MAX_AXIS_VALUES:
            raise AxisError(
                f"{_quote(text)} has more than {MAX_AXIS_VALUES} values: "
                "use a geometric step, as in 1-1024:x2"
            )
    return sorted(values)


def _quote(text: str, most: int = 40) -> str:
    """``text`` quoted for an error message, shortened past ``most`` characters."""
    return repr(text if len(text) <= most else text[: most - 3] + "...")


def _parse_item(item: str) -> range | list[int]:
    match = _ITEM.match(item)
    if match is None:
        raise AxisError(
            f"{_quote(item)} is not a value, a range A-B or a geometric range A-B:xK"
        )
    low = int(match[1])
    high = int(match[2]) if match[2] is not None else low
    if low < 1:
        raise AxisError(f"{item!r}: values start at 1")
    if high < low:
        raise AxisError(f"{item!r}: the range runs backwards")
    if match[3] is None:
        if high - low >= MAX_AXIS_VALUES:
            raise AxisError(
                f"{item!r} has more than {MAX_AXIS_VALUES} values: "
                "use a geometric step, as in 1-1024:x2"
            )
        return range(low, high + 1)
    factor = int(match[3])
    if factor < 2:
        raise AxisError(f"{item!r}: a geometric step multiplies by 2 or more")
    values = []
    value = low
    while value <= high:
        values.append(value)
        value *= factor
    return values


def cell_name(procs: int, limit: int) -> str:
    return f"{procs}×{limit}"


def grid(procs: Iterable[int], limits: Iterable[int]) -> list[Strategy]:
    """One strategy per (procs, limit) pair: all limits of 1 process, then of 2..."""
    limit_values = list(limits)
    return [
        Strategy(cell_name(p, limit), p, limit) for p in procs for limit in limit_values
    ]


@dataclass(frozen=True)
class Recommendation:
    """The shape to use, or none (``procs`` and ``limit`` are None), and why."""

    procs: int | None
    limit: int | None
    reason: str
    throughput: float | None = None  # msg/s of the recommended cell
    p99_ms: float | None = None  # its p99 end-to-end latency
    best_throughput: float | None = None  # msg/s of the fastest candidate
    max_p99_ms: float | None = None  # the bound asked for, if any
    band: float = BAND
    eligible: int = 0  # complete cells without excess handler failures
    candidates: int = 0  # eligible cells that also met the p99 bound

    @property
    def cell(self) -> str | None:
        if self.procs is None or self.limit is None:
            return None
        return cell_name(self.procs, self.limit)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def is_complete(result: RunResult) -> bool:
    """Every message processed, every worker alive, the run not cut short."""
    return (
        result.processed > 0
        and result.lost == 0
        and not result.dead_workers
        and not result.timed_out
        and not result.interrupted
    )


def _error_rate(result: RunResult) -> float:
    return result.errors / result.processed if result.processed else 1.0


def eligible(results: Sequence[RunResult]) -> list[RunResult]:
    """The complete cells whose handler failed no more often than the others'."""
    complete = [r for r in results if is_complete(r) and r.errors < r.processed]
    lowest = min((_error_rate(r) for r in complete), default=0.0)
    return [r for r in complete if _error_rate(r) <= lowest + ERROR_MARGIN]


def _p99(result: RunResult) -> float | None:
    return result.latency_ms.get("p99")


def recommend(
    results: Sequence[RunResult], max_p99_ms: float | None = None
) -> Recommendation:
    """The cheapest cell within ``BAND`` of the best throughput; see the module."""
    if max_p99_ms is not None and not max_p99_ms > 0:
        raise ValueError(f"a p99 bound must be above 0 ms, not {max_p99_ms:g}")
    trusted = eligible(results)
    if not trusted:
        return Recommendation(
            None,
            None,
            "No cell processed every message it published without its handler "
            "failing, so there is nothing to recommend.",
            max_p99_ms=max_p99_ms,
        )

    candidates = trusted
    if max_p99_ms is not None:
        candidates = [r for r in trusted if _meets(r, max_p99_ms)]
        if not candidates:
            return _none_met_bound(trusted, max_p99_ms)

    best = max(candidates, key=lambda r: r.throughput)
    floor = best.throughput * (1 - BAND)
    chosen = min(
        (r for r in candidates if r.throughput >= floor),
        key=lambda r: (r.procs, r.limit),
    )
    return Recommendation(
        procs=chosen.procs,
        limit=chosen.limit,
        reason=_reason(chosen, best, len(results), trusted, candidates, max_p99_ms),
        throughput=chosen.throughput,
        p99_ms=_p99(chosen),
        best_throughput=best.throughput,
        max_p99_ms=max_p99_ms,
        eligible=len(trusted),
        candidates=len(candidates),
    )


def _meets(result: RunResult, max_p99_ms: float) -> bool:
    p99 = _p99(result)
    return p99 is not None and p99 <= max_p99_ms


def _none_met_bound(trusted: Sequence[RunResult], max_p99_ms: float) -> Recommendation:
    measured = [r for r in trusted if _p99(r) is not None]
    if measured:
        lowest = min(measured, key=lambda r: (_p99(r), r.procs, r.limit))
        seen = f"; the lowest was {_p99(lowest):,.1f} ms, at {_shape(lowest)}"
    else:
        seen = ""
    return Recommendation(
        None,
        None,
        f"No cell kept its p99 latency within {max_p99_ms:,g} ms{seen}, "
        "so there is nothing to recommend under that bound.",
        max_p99_ms=max_p99_ms,
        eligible=len(trusted),
    )


def _shape(result: RunResult) -> str:
    return cell_name(result.procs, result.limit)


def _reason(
    chosen: RunResult,
    best: RunResult,
    ran: int,
    trusted: Sequence[RunResult],
    candidates: Sequence[RunResult],
    max_p99_ms: float | None,
) -> str:
    band = f"{BAND:.0%}"
    if chosen is best:
        first = (
            f"{_shape(chosen)} had the highest throughput, "
            f"{chosen.throughput:,.0f} msg/s, and no cell with fewer processes, "
            f"or as many and a smaller limit, came within {band} of it."
        )
    else:
        first = (
            f"{_shape(chosen)} reached {chosen.throughput:,.0f} msg/s, within "
            f"{band} of the best ({best.throughput:,.0f} msg/s at {_shape(best)}), "
            "with the fewest processes and then the smallest limit of those cells."
        )
    notes = []
    if max_p99_ms is not None:
        over = len(trusted) - len(candidates)
        p99 = _p99(chosen)
        assert p99 is not None  # every candidate met the bound
        others = "no other cell" if not over else f"{over} other cell"
        notes.append(
            f"its p99 latency was {p99:,.1f} ms against the {max_p99_ms:,g} ms "
            f"bound, which {others}{'s' if over > 1 else ''} exceeded"
        )
    left_out = ran - len(trusted)
    if left_out:
        notes.append(
            f"{left_out} cell{'s' if left_out != 1 else ''} that lost messages, "
            "did not finish or failed more often "
            f"{'were' if left_out != 1 else 'was'} left out"
        )
    if not notes:
        return first
    second = "; ".join(notes)
    return f"{first} {second[0].upper()}{second[1:]}."


def document(
    results: Sequence[RunResult],
    workload: dict[str, Any],
    recommendation: Recommendation,
    exit_code: int,
) -> dict[str, Any]:
    """The ``scaler sweep --json`` document."""
    return {
        "version": __version__,
        "workload": workload,
        "runs": [r.to_json() for r in results],
        "recommendation": recommendation.to_json(),
        "exit_code": exit_code,
    }


def _cell_text(result: RunResult, trusted: bool, recommended: bool) -> str:
    p99 = _p99(result)
    lines = [
        f"{result.throughput:,.0f} msg/s",
        "p99 -" if p99 is None else f"p99 {p99:,.1f} ms",
        f"eff {result.efficiency:.0%}",
    ]
    if result.lost:
        lines.append(f"[bold red]lost {result.lost:,}[/]")
    elif not is_complete(result):
        lines.append("[bold red]incomplete[/]")
    if result.errors:
        style = "yellow" if trusted else "bold red"
        lines.append(f"[{style}]errors {result.errors:,}[/]")
    if recommended:
        lines[0] = f"[bold green]★ {lines[0]}[/]"
    return "\n".join(lines)


def table(
    results: Sequence[RunResult], recommendation: Recommendation | None = None
) -> Table:
    """Rows of processes, columns of limits; each cell msg/s, p99, efficiency.

    The recommended cell is starred; cells left out of the choice say why.
    """
    procs = sorted({r.procs for r in results})
    limits = sorted({r.limit for r in results})
    cells = {(r.procs, r.limit): r for r in results}  # the last run of a shape wins
    trusted = {id(r) for r in eligible(results)}
    chosen = (
        (recommendation.procs, recommendation.limit) if recommendation else (None, None)
    )
    grid_table = Table(
        title="Throughput, p99 latency and efficiency by processes × limit",
        title_justify="left",
        show_lines=True,
    )
    grid_table.add_column("procs \\ limit", justify="right")
    for limit in limits:
        grid_table.add_column(str(limit), justify="right")
    for p in procs:
        row = [str(p)]
        for limit in limits:
            result = cells.get((p, limit))
            if result is None:
                row.append("-")
            else:
                recommended = (p, limit) == chosen
                row.append(_cell_text(result, id(result) in trusted, recommended))
        grid_table.add_row(*row)
    return grid_table
