"""Charts of a sweep or a run, written to a PNG or SVG file.

matplotlib is an optional extra (``pip install 'scaler[plot]'``) and is
imported only when a chart is drawn.  Figures are built with
``matplotlib.figure.Figure`` on an Agg canvas, never through pyplot, so
no display is needed and no global backend or figure list is touched.

The sweep chart puts throughput against total concurrency (processes
times limit), one line per process count, under an ideal from Little's law:
with C messages in flight and a mean service time S, at most C / S
messages a second complete.  CPU-bound work cannot run on more cores
than there are, so its ideal stops rising at ``cores`` / S.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from scaler.stats import RunResult
from scaler.sweep import Recommendation, cell_name, eligible
from scaler.workload import WorkSpec

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = {".png": "png", ".svg": "svg"}
INSTALL_HINT = "pip install 'scaler[plot]'"
FIGSIZE_IN = (9.0, 5.5)
DPI = 120  # dots per inch of a PNG: 1080 by 660 pixels at FIGSIZE_IN
IDEAL_POINTS = 200  # samples of the ideal curve across the x range
HEADROOM = 1.15  # y axis top, as a multiple of the highest point shown
LOG_SPAN = 10.0  # a throughput range wider than this gets a logarithmic axis
LOG_MARGIN = 1.6  # space above and below the points on a logarithmic axis
IDEAL_SHOWN = 2.0  # the ideal is drawn up to this multiple of the best measured


class PlotError(ValueError):
    """A chart that cannot be written to the path asked for."""


class PlotUnavailableError(ImportError):
    """matplotlib, the optional extra, is not installed."""


def plot_format(path: str | os.PathLike[str]) -> str:
    """``png`` or ``svg``, from the path's extension; PlotError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise PlotError(f"cannot draw {str(path)!r}: name a .png or .svg file")
    return FORMATS[suffix]


def require_matplotlib() -> None:
    """Raise PlotUnavailableError, naming the extra, when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailableError(
            f"drawing charts needs matplotlib: {INSTALL_HINT}"
        ) from None


def _new_figure() -> tuple[Figure, Axes]:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _save(figure: Figure, path: Path, kind: str) -> Path:
    figure.savefig(path, format=kind)
    return path


def _workload_title(
    what: str, results: Sequence[RunResult], work: WorkSpec | None
) -> str:
    parts = [f"work {work}"] if work is not None else []
    published = max((r.published for r in results), default=0)
    if published:
        parts.append(f"{published:,} messages each")
    return f"{what}: {', '.join(parts)}" if parts else what


def mean_service_s(results: Sequence[RunResult], work: WorkSpec | None) -> float | None:
    """Seconds one message takes: the work spec's mean, else measured.

    Measured, a cell's mean service time is its effective concurrency
    over its throughput (total service / wall, over processed / wall).
    The smallest cell's value is used: the one least inflated by
    contention for the CPU or the event loop.
    """
    if work is not None and work.mean_s > 0:
        return work.mean_s
    measured = [
        r.effective_concurrency / r.throughput
        for r in results
        if r.throughput > 0 and r.effective_concurrency > 0
    ]
    return min(measured, default=None)


def ideal_throughput(
    concurrency: float,
    service_s: float,
    cores: int | None = None,
    cpu_s: float | None = None,
) -> float:
    """Little's law: messages in flight over service time, capped by the cores.

    ``cpu_s`` is the part of the service time that computes (all of it
    when not given); the cores can do no more than ``cores / cpu_s``
    messages a second, however many are in flight.
    """
    waiting_bound = concurrency / service_s
    if cores is None:
        return waiting_bound
    return min(waiting_bound, cores / (service_s if cpu_s is None else cpu_s))


def plot_sweep(
    results: Sequence[RunResult],
    recommendation: Recommendation | None,
    path: str | os.PathLike[str],
    work: WorkSpec | None = None,
    cores: int | None = None,
) -> Path:
    """Draw throughput against processes times limit; return the file written."""
    target = Path(path)
    kind = plot_format(target)
    if not results:
        raise PlotError("there are no results to draw")
    figure, ax = _new_figure()

    log_y = _spans_decades(results)
    # A logarithmic axis has no 0: a cell that processed nothing is left off.
    shown = [r for r in results if r.throughput > 0 or not log_y]
    best = max(r.throughput for r in results)
    service_s = mean_service_s(results, work)
    top = best
    if service_s is not None:
        computes = work is not None and work.mean_cpu_s > 0
        cap = (cores or os.cpu_count() or 1) if computes else None
        cpu_s = work.mean_cpu_s if work is not None and computes else None
        ceiling = best * IDEAL_SHOWN
        top = max(top, _draw_ideal(ax, results, service_s, cap, cpu_s, ceiling))

    for procs in sorted({r.procs for r in shown}):
        line = sorted((r for r in shown if r.procs == procs), key=lambda r: r.slots)
        noun = "process" if procs == 1 else "processes"
        ax.plot(
            [r.slots for r in line],
            [r.throughput for r in line],
            marker="o",
            label=f"{procs} {noun}",
        )
    _mark_left_out(ax, results, shown)
    if recommendation is not None:
        _mark_recommended(ax, results, recommendation)

    _concurrency_axis(ax, results)
    _throughput_axis(ax, results, top, log_y)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(_workload_title("scaler sweep", results, work))
    # Below the axes, where it cannot hide a line.
    figure.legend(loc="outside lower center", ncols=3, fontsize="small")
    return _save(figure, target, kind)


def _draw_ideal(
    ax: Axes,
    results: Sequence[RunResult],
    service_s: float,
    cores: int | None,
    cpu_s: float | None,
    ceiling: float,
) -> float:
    """Draw the ideal as a dashed curve; return the highest value shown."""
    low = min(r.slots for r in results)
    high = max(r.slots for r in results)
    xs = [low * (high / low) ** (i / (IDEAL_POINTS - 1)) for i in range(IDEAL_POINTS)]
    if cores is not None:
        knee = cores * service_s / (cpu_s or service_s)  # where the cores run out
        if low < knee < high:
            xs = sorted([*xs, knee])
    ys = [ideal_throughput(x, service_s, cores, cpu_s) for x in xs]
    label = f"ideal: concurrency ÷ {service_s * 1000:,.3g} ms mean service"
    if cores is not None:
        label += f", at most {cores} cores"
    ax.plot(xs, ys, linestyle="--", color="0.45", label=label)
    return min(max(ys), ceiling)


def _mark_left_out(
    ax: Axes, results: Sequence[RunResult], shown: Sequence[RunResult]
) -> None:
    """Cross out the cells the recommendation could not consider."""
    trusted = {id(r) for r in eligible(results)}
    bad = [r for r in shown if id(r) not in trusted]
    if bad:
        ax.plot(
            [r.slots for r in bad],
            [r.throughput for r in bad],
            linestyle="none",
            marker="x",
            markersize=11,
            markeredgewidth=2.5,
            color="crimson",
            label="left out: lost messages, incomplete or failing",
        )


def _mark_recommended(
    ax: Axes, results: Sequence[RunResult], recommendation: Recommendation
) -> None:
    chosen = [
        r
        for r in results
        if (r.procs, r.limit) == (recommendation.procs, recommendation.limit)
    ]
    if not chosen:
        return
    cell = chosen[-1]
    ax.plot(
        [cell.slots],
        [cell.throughput],
        linestyle="none",
        marker="o",
        markersize=18,
        markerfacecolor="none",
        markeredgewidth=2.5,
        color="seagreen",
        label=(
            f"recommended: {cell_name(cell.procs, cell.limit)}, "
            f"{cell.throughput:,.0f} msg/s"
        ),
    )


def _concurrency_axis(ax: Axes, results: Sequence[RunResult]) -> None:
    slots = sorted({r.slots for r in results})
    if slots[-1] > 2 * slots[0]:
        ax.set_xscale("log", base=2)
    ax.set_xticks(slots, [f"{s:,}" for s in slots])
    ax.minorticks_off()
    ax.set_xlabel("total concurrency: processes × limit (messages in flight)")


def _spans_decades(results: Sequence[RunResult]) -> bool:
    """Whether the positive throughputs span more than ``LOG_SPAN``."""
    positive = [r.throughput for r in results if r.throughput > 0]
    return bool(positive) and max(positive) / min(positive) > LOG_SPAN


def _throughput_axis(
    ax: Axes, results: Sequence[RunResult], top: float, log_y: bool
) -> None:
    """Logarithmic when ``log_y``, else linear from 0."""
    positive = [r.throughput for r in results if r.throughput > 0]
    if log_y:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / LOG_MARGIN, top * LOG_MARGIN)
        ax.yaxis.set_minor_formatter("")
    else:
        ax.set_ylim(0, max(top, 1.0) * HEADROOM)
    ax.yaxis.set_major_formatter("{x:,.0f}")
    scale = ", log scale" if ax.get_yscale() == "log" else ""
    ax.set_ylabel(f"throughput (messages/s{scale})")


def plot_comparison(
    results: Sequence[RunResult],
    path: str | os.PathLike[str],
    work: WorkSpec | None = None,
) -> Path:
    """Draw each strategy's throughput as a bar; return the file written.

    Beside each bar, a hollow one shows the throughput of a perfect
    dispatcher on the same slots and the same service times.
    """
    target = Path(path)
    kind = plot_format(target)
    if not results:
        raise PlotError("there are no results to draw")
    figure, ax = _new_figure()

    positions = list(range(len(results)))
    width = 0.38
    measured = [r.throughput for r in results]
    ideal = [
        r.processed / r.ideal_wall_s if r.ideal_wall_s > 0 else 0.0 for r in results
    ]
    trusted = {id(r) for r in eligible(results)}
    colors = ["tab:blue" if id(r) in trusted else "crimson" for r in results]
    bars = ax.bar(
        [p - width / 2 for p in positions],
        measured,
        width,
        color=colors,
        label="measured",
    )
    ax.bar(
        [p + width / 2 for p in positions],
        ideal,
        width,
        fill=False,
        linestyle="--",
        edgecolor="0.45",
        label="perfect dispatcher, same slots",
    )
    ax.bar_label(bars, [f"{v:,.0f}" for v in measured], padding=3, fontsize="small")

    ax.set_xticks(positions, [_bar_label(r) for r in results])
    ax.set_ylim(0, max([*measured, *ideal, 1.0]) * HEADROOM)
    ax.set_ylabel("throughput (messages/s)")
    ax.yaxis.set_major_formatter("{x:,.0f}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(_workload_title("scaler run", results, work))
    ax.legend(loc="upper left", fontsize="small")
    return _save(figure, target, kind)


def _bar_label(result: RunResult) -> str:
    shape = cell_name(result.procs, result.limit)
    label = shape if result.strategy == shape else f"{result.strategy}\n{shape}"
    if result.lost:
        label += f"\nlost {result.lost:,}"
    return label
