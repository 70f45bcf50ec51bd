"""Charts: the right kind of file, the right content, clear refusals."""

from __future__ import annotations

import re
import struct
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from scaler import plot
from scaler.plot import PlotError, PlotUnavailableError, plot_comparison, plot_sweep
from scaler.stats import RunResult
from scaler.sweep import recommend
from scaler.workload import WorkSpec
from test_sweep import cell

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"


def sweep_results() -> list[RunResult]:
    return [
        cell(1, 1, 95),
        cell(1, 8, 753),
        cell(1, 64, 5494),
        cell(2, 1, 185),
        cell(2, 8, 1495, lost=4, processed=996),
        cell(2, 64, 9849),
    ]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_texts(path: Path) -> list[str]:
    """The text drawn in an SVG: matplotlib notes each string in a comment."""
    content = path.read_text(encoding="utf-8")
    assert ET.fromstring(content).tag == SVG_ROOT
    return re.findall(r"<!-- (.*?) -->", content)


def test_a_sweep_chart_named_png_is_a_png_image(tmp_path: Path) -> None:
    results = sweep_results()
    written = plot_sweep(
        results,
        recommend(results),
        tmp_path / "sweep.png",
        WorkSpec.parse("sleep:10ms"),
    )
    assert written == tmp_path / "sweep.png"
    assert png_size(written) == (1080, 660)


def test_the_extension_decides_the_format_whatever_its_case(tmp_path: Path) -> None:
    results = sweep_results()
    assert png_size(plot_sweep(results, None, tmp_path / "SWEEP.PNG")) == (1080, 660)
    assert svg_texts(plot_sweep(results, None, tmp_path / "sweep.Svg"))


def test_a_sweep_chart_shows_the_workload_the_ideal_and_the_choice(
    tmp_path: Path,
) -> None:
    results = sweep_results()
    texts = svg_texts(
        plot_sweep(
            results,
            recommend(results),
            tmp_path / "sweep.svg",
            WorkSpec.parse("sleep:10ms"),
        )
    )
    assert "scaler sweep: work sleep:10ms, 1,000 messages each" in texts
    assert "total concurrency: processes × limit (messages in flight)" in texts
    assert "throughput (messages/s, log scale)" in texts
    assert "ideal: concurrency ÷ 10 ms mean service" in texts
    assert {"1 process", "2 processes"} <= set(texts)
    assert "recommended: 2×64, 9,849 msg/s" in texts
    assert "left out: lost messages, incomplete or failing" in texts


def test_the_ideal_for_cpu_bound_work_stops_at_the_core_count(tmp_path: Path) -> None:
    results = [cell(1, 1, 400), cell(2, 1, 700), cell(4, 4, 650)]
    texts = svg_texts(
        plot_sweep(results, None, tmp_path / "cpu.svg", WorkSpec.parse("cpu:2ms"), 2)
    )
    assert "ideal: concurrency ÷ 2 ms mean service, at most 2 cores" in texts
    assert "throughput (messages/s)" in texts  # a range within 10 times: a linear axis


def test_without_a_work_spec_the_ideal_uses_the_measured_service_time(
    tmp_path: Path,
) -> None:
    # effective concurrency (0.8 of the slots) over throughput: 0.8 / 40 = 20 ms
    results = [cell(1, 1, 40), cell(1, 4, 120)]
    texts = svg_texts(plot_sweep(results, None, tmp_path / "measured.svg"))
    assert "ideal: concurrency ÷ 20 ms mean service" in texts


def test_a_single_cell_sweep_still_draws(tmp_path: Path) -> None:
    results = [cell(2, 8, 1000)]
    texts = svg_texts(plot_sweep(results, recommend(results), tmp_path / "one.svg"))
    assert "recommended: 2×8, 1,000 msg/s" in texts


def test_mean_service_comes_from_the_work_spec_else_the_least_contended_cell() -> None:
    results = [cell(1, 1, 40), cell(2, 8, 400)]  # 20 ms and 32 ms measured
    assert plot.mean_service_s(results, WorkSpec.parse("sleep:0-0.5")) == 0.25
    assert plot.mean_service_s(results, None) == pytest.approx(0.020)
    assert plot.mean_service_s(results, WorkSpec.parse("none")) == pytest.approx(0.020)
    assert plot.mean_service_s([cell(1, 1, 0)], None) is None


def test_the_ideal_is_littles_law_capped_by_cores() -> None:
    assert plot.ideal_throughput(64, 0.010) == pytest.approx(6400)
    assert plot.ideal_throughput(64, 0.002, cores=2) == pytest.approx(1000)
    assert plot.ideal_throughput(1, 0.002, cores=2) == pytest.approx(500)
    # 9 ms waiting + 1 ms computing: two cores cap it at 2,000 msg/s, past
    # the 20 messages in flight that reach that rate.
    assert plot.ideal_throughput(10, 0.010, 2, cpu_s=0.001) == pytest.approx(1000)
    assert plot.ideal_throughput(64, 0.010, 2, cpu_s=0.001) == pytest.approx(2000)


def test_a_comparison_chart_draws_each_strategy_as_a_bar(tmp_path: Path) -> None:
    results = [
        cell(4, 1, 7.9, strategy="queue-group"),
        cell(1, 25, 49.0, strategy="in-subscription"),
        cell(4, 25, 180.0, strategy="combined", lost=2, processed=998),
    ]
    work = WorkSpec.parse("sleep:0-0.5")
    assert png_size(plot_comparison(results, tmp_path / "run.png", work)) == (1080, 660)
    texts = svg_texts(plot_comparison(results, tmp_path / "run.svg", work))
    assert f"scaler run: work {work}, 1,000 messages each" in texts
    assert {"queue-group", "4×1", "in-subscription", "1×25", "lost 2"} <= set(texts)
    assert {"8", "49", "180"} <= set(texts)  # the bars' values
    assert "perfect dispatcher, same slots" in texts


@pytest.mark.parametrize("name", ["chart.pdf", "chart.jpg", "chart", "chart.png.txt"])
def test_a_file_name_that_is_not_png_or_svg_is_refused_on_one_line(
    tmp_path: Path, name: str
) -> None:
    target = tmp_path / name
    with pytest.raises(PlotError) as caught:
        plot_sweep(sweep_results(), None, target)
    assert str(caught.value) == f"cannot draw {str(target)!r}: name a .png or .svg file"
    with pytest.raises(PlotError, match=r"name a \.png or \.svg file"):
        plot_comparison(sweep_results(), target)
    assert not target.exists()


def test_nothing_to_draw_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlotError, match="no results"):
        plot_sweep([], None, tmp_path / "empty.png")
    with pytest.raises(PlotError, match="no results"):
        plot_comparison([], tmp_path / "empty.png")


def test_without_matplotlib_the_error_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now fails
    target = tmp_path / "sweep.png"
    with pytest.raises(PlotUnavailableError) as caught:
        plot_sweep(sweep_results(), None, target)
    assert "pip install 'scaler[plot]'" in str(caught.value)
    assert not target.exists()


def test_a_cell_that_processed_nothing_is_left_off_a_log_axis_quietly(
    tmp_path: Path,
) -> None:
    results = [
        cell(1, 1, 100),
        cell(1, 8, 0, processed=0, lost=1000),
        cell(2, 8, 5000),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texts = svg_texts(plot_sweep(results, None, tmp_path / "nothing.svg"))
    assert "throughput (messages/s, log scale)" in texts
    # Nothing left to cross out: the empty cell is not on the chart.
    assert "left out: lost messages, incomplete or failing" not in texts
