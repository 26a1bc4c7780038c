from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.compiler.calibration import load_frames, load_frames_only
from lepton_edge.errors import CompileError
from lepton_edge.pipeline.preprocess import letterbox
from tests.compiler.conftest import SAMPLES


def test_spec_sets_are_disjoint_and_letterboxed_like_the_daemon(small_spec: Path) -> None:
    frames = load_frames(small_spec)
    assert len(frames.calibrate) == 10 + 5 + 6
    assert len(frames.evaluate) == 16 + 7
    assert not set(frames.calibrate.origins) & set(frames.evaluate.origins)
    cap = cv2.VideoCapture(str(SAMPLES / "vtest.avi"))
    ok, first = cap.read()
    cap.release()
    assert ok
    expected, plan = letterbox(first, 640)
    tensor, got_plan = frames.calibrate.tensor(0)
    assert frames.calibrate.origins[0] == "vtest.avi#0"
    assert got_plan == plan and tensor.shape == (1, 3, 512, 640)
    np.testing.assert_array_equal(tensor, expected)
    assert frames.calibrate[0].dtype == np.float32


def test_video_is_sampled_to_n_frames_and_held_out_frames_differ() -> None:
    frames = load_frames(SAMPLES / "bikes.mp4", count=12, eval_count=8)
    assert len(frames.calibrate) == 12 and len(frames.evaluate) == 8
    assert not set(frames.calibrate.origins) & set(frames.evaluate.origins)
    assert frames.calibrate.origins[0] == "bikes.mp4#0"
    assert frames.calibrate.origins[-1] == "bikes.mp4#249"


def test_image_folder_holds_out_every_fifth_image() -> None:
    frames = load_frames(SAMPLES / "images")
    assert len(frames.calibrate) == 5 and len(frames.evaluate) == 1
    assert frames.calibrate.sha256() != frames.evaluate.sha256()


def test_eval_data_from_a_spec_uses_its_evaluate_section(small_spec: Path) -> None:
    assert len(load_frames_only(small_spec)) == 23


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: d / "missing", "calibration path not found"),
    (lambda d: d, "no images in the calibration path"),
    (lambda d: _write(d / "notes.txt", "hello"), "not an image folder, a video"),
    (lambda d: _write(d / "bad.yaml", "calibrate: 3"), "needs a `calibrate:` list"),
    (lambda d: _write(d / "overlap.yaml", f"calibrate: [{{images: {SAMPLES}/images}}]\n"
                      f"evaluate: [{{images: {SAMPLES}/images}}]"), "in both calibrate and"),
])
def test_bad_calibration_paths_are_one_clear_line(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(CompileError, match=message) as info:
        load_frames(make(tmp_path))
    assert "\n" not in str(info.value)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
