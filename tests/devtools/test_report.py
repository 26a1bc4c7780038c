"""`lepton-edge report`: PNG plots of the real golden recording, checked for content (pixel
variance, not just existence)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.cli import main
from lepton_edge.devtools.recording import read_recording
from lepton_edge.devtools.report import (
    _pyplot,
    plot_detections,
    plot_latency,
    plot_latency_hist,
    write_report,
)
from lepton_edge.errors import MessageError
from tests.devtools.test_recording import GOLDEN, det_line, health_line, write

PLOTS = ("latency.png", "latency_hist.png", "detections.png")


def assert_not_blank(path: Path) -> None:
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable PNG"
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert float(image.std()) > 10.0, f"{path} looks blank (pixel std {image.std():.1f})"
    # Plotted lines are colored: a blank or axes-only figure is gray.
    spread = image.max(axis=2).astype(int) - image.min(axis=2).astype(int)
    assert int((spread > 60).sum()) > 500, f"{path} has no colored plot lines"


def test_report_of_the_golden_run_writes_three_plots(tmp_path: Path) -> None:
    written = write_report(read_recording(GOLDEN), tmp_path / "out")
    assert [p.name for p in written] == list(PLOTS)
    for path in written:
        assert_not_blank(path)


def test_report_command_prints_the_files(tmp_path: Path, capsys) -> None:
    assert main(["report", str(GOLDEN), "--out", str(tmp_path / "r"), "--dpi", "60"]) == 0
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == list(PLOTS)
    assert all(Path(p).is_file() for p in printed)


def test_several_cameras_get_one_set_each(tmp_path: Path) -> None:
    lines = [det_line(cam, i, [(10 + i, 10, 60 + i, 90, 0.8, 0), (200, 10, 300, 90, 0.6, 2)])
             for i in range(20) for cam in ("a", "b")]
    rec = read_recording(write(tmp_path / "two.jsonl", lines))
    names = [p.name for p in write_report(rec, tmp_path / "out", dpi=60)]
    assert names == [f"{cam}.{p}" for cam in ("a", "b") for p in PLOTS]


def test_a_recording_without_detections_is_a_clear_error(tmp_path: Path) -> None:
    rec = read_recording(write(tmp_path / "h.jsonl", [health_line(), health_line("stopping")]))
    with pytest.raises(MessageError, match="no detection messages to plot"):
        write_report(rec, tmp_path / "out")
    assert not np.any([p.exists() for p in (tmp_path / "out").glob("*.png")])


def test_latency_is_plotted_on_a_log_scale_against_time(tmp_path: Path) -> None:
    """Issue 15, item 12: a linear axis let the warm-up frame squash the rest, and the x axis
    was the frame index. A 10 fps recording whose first frame took 900 ms."""
    lines = [det_line("a", i, [(10, 10, 60, 90, 0.8, 0)]) for i in range(30)]
    msgs = list(read_recording(write(tmp_path / "r.jsonl", lines)).camera("a").values())
    msgs[0] = dataclasses.replace(msgs[0], latency_ms=msgs[0].latency_ms | {"infer": 900.0})
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3)
    try:
        plot_latency(axes[0], msgs)
        assert axes[0].get_yscale() == "log"
        assert "time" in axes[0].get_xlabel() and "(s)" in axes[0].get_xlabel()
        infer = next(line for line in axes[0].get_lines() if line.get_label().startswith("infer"))
        # det_line stamps frame i at 1700000000 + i / 10: three seconds of frames.
        np.testing.assert_allclose(infer.get_xdata(), np.arange(30) / 10, atol=1e-6)
        assert infer.get_ydata()[0] == 900.0 and infer.get_ydata()[1] == 21.0
        lo, hi = axes[0].get_ylim()
        assert lo < 21.0 and hi > 900.0 and hi / lo > 40  # both ends on the plot

        plot_latency_hist(axes[1], msgs)
        assert axes[1].get_xscale() == "log"
        plot_detections(axes[2], msgs)
        assert "(s)" in axes[2].get_xlabel()
        assert max(axes[2].get_lines()[0].get_xdata()) == pytest.approx(2.9)
    finally:
        plt.close(fig)
