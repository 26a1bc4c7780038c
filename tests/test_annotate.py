"""`--annotate OUT.mp4`: real frames of the bundled clips through `Annotator.add` (the pipeline's
per-frame hook), read back with cv2.VideoCapture: frame count, size, boxes and overlay drawn."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.annotate import Annotator, class_color, draw
from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError
from lepton_edge.recording import read_recording, to_detections
from lepton_edge.results import FrameResult

from .conftest import BIKES, VTEST
from .test_recording import GOLDEN, det_line

BOX = (200.0, 60.0, 420.0, 240.0)


def read_all(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"cv2.VideoCapture cannot open {path}"
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


LABELS = ("person", "bicycle", "car")


def frame(camera: str, index: int, image: np.ndarray, dets: Detections) -> FrameResult:
    return FrameResult(camera, index, index, time.time(), time.monotonic(), image, dets,
                       LABELS, {})


def test_every_frame_of_the_source_is_written_with_its_box(tmp_path: Path) -> None:
    source = read_all(BIKES)
    out = tmp_path / "bikes.mp4"
    annotator = Annotator(out, fps=25.0)
    dets = Detections(np.array([BOX], np.float32), np.array([0.87], np.float32),
                      np.array([1], np.int32))
    payload = det_line("street", 0, [(*BOX, 0.87, 1)])
    for i, image in enumerate(source):
        annotator.add(frame("street", i, image, dets), payload)
    annotator.close()
    annotator.close()  # safe twice
    written = read_all(out)
    assert len(written) == len(source) == 250
    cap = cv2.VideoCapture(str(out))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (640, 272)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0)
    cap.release()
    mid = written[100].astype(np.int16)
    assert float(written[100].std()) > 20.0
    # The box's left edge is drawn in its class color; the frame itself is not that color.
    color = np.array(class_color(1), np.int16)
    edge = mid[int(BOX[1]) + 30:int(BOX[3]) - 10, int(BOX[0]) - 1:int(BOX[0]) + 2]
    assert np.abs(edge - color).max(axis=2).mean() < 40
    # The overlay darkens the top-left corner and writes white text in it.
    corner = mid[:30, :200]
    assert (corner.max(axis=2) > 200).sum() > 50 and np.median(corner) < 60


def test_golden_detections_on_vtest_frames_and_frames_added_after_close(tmp_path: Path) -> None:
    golden = read_recording(GOLDEN).camera("plaza")
    raw = GOLDEN.read_bytes().splitlines()
    payloads = {m.frame: line for m, line in zip(golden.values(), (
        r for r in raw if b'"camera":' in r), strict=True)}
    cap = cv2.VideoCapture(str(VTEST))
    out = tmp_path / "plaza.mp4"
    annotator = Annotator(out)
    images = []
    for i in range(20):
        ok, image = cap.read()
        assert ok
        images.append(image)
        annotator.add(frame("plaza", i, image, to_detections(golden[i])), payloads[i])
    cap.release()
    annotator.close()
    annotator.add(frame("plaza", 20, images[0], Detections.empty()), b"{}")
    written = read_all(out)
    assert len(written) == 20 and written[0].shape == (576, 768, 3)
    changed = np.abs(written[10].astype(int) - images[10].astype(int)).max(axis=2) > 60
    assert changed.sum() > 2000  # boxes, labels and overlay


def test_each_further_camera_gets_its_own_file(tmp_path: Path) -> None:
    annotator = Annotator(tmp_path / "out.mp4")
    small = np.full((120, 160, 3), 90, np.uint8)
    for i in range(3):
        annotator.add(frame("a", i, small, Detections.empty()), b"not json")
        annotator.add(frame("b", i, small, Detections.empty()), det_line("b", i, []))
    # A camera that comes back at another resolution is resized to its first size.
    annotator.add(frame("a", 3, np.zeros((240, 320, 3), np.uint8), Detections.empty()), b"{}")
    annotator.close()
    assert annotator.frames == {"a": 4, "b": 3}
    assert len(read_all(tmp_path / "out.mp4")) == 4
    assert len(read_all(tmp_path / "out.b.mp4")) == 3


def test_draw_leaves_the_input_untouched() -> None:
    image = np.full((100, 100, 3), 50, np.uint8)
    dets = Detections(np.array([[10, 10, 90, 90]], np.float32), np.array([0.5], np.float32),
                      np.array([0], np.int32))
    out = draw(image, dets, ["person"])
    assert (image == 50).all() and not (out == 50).all()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    annotator = Annotator(blocker / "sub" / "out.mp4")
    with pytest.raises(ConfigError, match="cannot create its folder"):
        annotator.add(frame("a", 0, np.zeros((64, 64, 3), np.uint8), Detections.empty()), b"{}")
    with pytest.raises(ConfigError, match="fps must be > 0"):
        Annotator(tmp_path / "x.mp4", fps=0)
