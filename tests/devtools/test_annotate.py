"""`--annotate OUT.webm`: real frames of the bundled clips through `Annotator.add` (the pipeline's
per-frame hook, fed typed results), read back with cv2.VideoCapture: frame count, size, codec
by suffix, boxes and overlay drawn; labels that do not cover each other, colours that tell
classes apart, no made-up fps on the first frame."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.detections import Detections
from lepton_edge.devtools.annotate import (
    CODECS,
    PALETTE,
    Annotator,
    class_color,
    draw,
    place_labels,
    status_lines,
)
from lepton_edge.devtools.recording import read_recording, to_detections
from lepton_edge.errors import ConfigError
from lepton_edge.results import FrameResult
from tests.conftest import BIKES, VTEST
from tests.devtools.test_recording import GOLDEN, det_line

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
    out = tmp_path / "bikes.avi"  # Motion JPEG: fast; the codecs have their own test
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
    out = tmp_path / "plaza.avi"
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
    annotator = Annotator(tmp_path / "out.mkv")
    small = np.full((120, 160, 3), 90, np.uint8)
    for i in range(3):
        annotator.add(frame("a", i, small, Detections.empty()), b"not json")
        annotator.add(frame("b", i, small, Detections.empty()), det_line("b", i, []))
    # A camera that comes back at another resolution is resized to its first size.
    annotator.add(frame("a", 3, np.zeros((240, 320, 3), np.uint8), Detections.empty()), b"{}")
    annotator.close()
    assert annotator.frames == {"a": 4, "b": 3}
    assert len(read_all(tmp_path / "out.mkv")) == 4
    assert len(read_all(tmp_path / "out.b.mkv")) == 3


def test_draw_leaves_the_input_untouched() -> None:
    image = np.full((100, 100, 3), 50, np.uint8)
    dets = Detections(np.array([[10, 10, 90, 90]], np.float32), np.array([0.5], np.float32),
                      np.array([0], np.int32))
    out = draw(image, dets, ["person"])
    assert (image == 50).all() and not (out == 50).all()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    annotator = Annotator(blocker / "sub" / "out.webm")
    with pytest.raises(ConfigError, match="cannot create its folder"):
        annotator.add(frame("a", 0, np.zeros((64, 64, 3), np.uint8), Detections.empty()), b"{}")
    with pytest.raises(ConfigError, match="fps must be > 0"):
        Annotator(tmp_path / "x.webm", fps=0)
    with pytest.raises(ConfigError, match=r"cannot tell the video format from '\.mov'; name it "
                                          r"\.webm, \.mp4"):
        Annotator(tmp_path / "x.mov")


# --- issue 15, item 12 ----------------------------------------------------------------------

def _fourcc(path: Path) -> str:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    code = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 5
    return code


@pytest.mark.parametrize(("suffix", "expected"), [
    (".webm", {"VP80"}),  # what browsers play, and what every OpenCV wheel writes
    # H.264 where OpenCV has an encoder; the PyPI wheels have none, and fall back to MPEG-4
    # Part 2 (read back as FMP4) with a warning (below).
    (".mp4", {"avc1", "FMP4"}),
    (".mkv", {"VP80"}),
    (".avi", {"MJPG"}),
])
def test_the_codec_follows_the_suffix(tmp_path: Path, suffix: str, expected: set[str],
                                      caplog: pytest.LogCaptureFixture) -> None:
    assert suffix in CODECS
    out = tmp_path / f"clip{suffix}"
    annotator = Annotator(out)
    image = cv2.VideoCapture(str(VTEST)).read()[1]
    for i in range(5):
        annotator.add(frame("plaza", i, image, Detections.empty()))
    annotator.close()
    code = _fourcc(out)
    assert code in expected
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if code == "FMP4":  # not playable in a browser: the user is told, and what to do
        assert warned == [f"--annotate {out}: this OpenCV has no avc1 encoder, writing mp4v: "
                          f"MPEG-4 Part 2, which browsers do not play; name the file .webm "
                          f"(VP8) for a browser"]
    else:
        assert not warned


def _lab(bgr: tuple[int, int, int]) -> np.ndarray:
    return cv2.cvtColor(np.array([[bgr]], np.float32) / 255.0, cv2.COLOR_BGR2Lab)[0, 0]


def test_classes_get_colours_that_tell_them_apart() -> None:
    """CIE76 colour distance; car (2) and truck (7) were two near-identical greens (28)."""
    dist = {(a, b): float(np.linalg.norm(_lab(class_color(a)) - _lab(class_color(b))))
            for a in range(len(PALETTE)) for b in range(a + 1, len(PALETTE))}
    assert min(dist.values()) > 15, min(dist.items(), key=lambda kv: kv[1])
    watched = (0, 1, 2, 3, 5, 7)  # person, bicycle, car, motorcycle, bus, truck
    close = {k: v for k, v in dist.items() if set(k) <= set(watched) and v < 50}
    assert not close, close
    assert dist[2, 7] > 100


def _crowd() -> Detections:
    """A queue of people, boxes overlapping and top edges 3 px apart: every label wants the
    same spot."""
    xyxy = np.array([[100 + 12 * i, 100 + 3 * i, 160 + 12 * i, 260 + 3 * i] for i in range(8)],
                    np.float32)
    return Detections(xyxy, np.linspace(0.9, 0.5, 8).astype(np.float32),
                      np.array([0, 2, 0, 7, 0, 1, 3, 0], np.int32))


def test_labels_are_placed_clear_of_each_other() -> None:
    dets = _crowd()
    sizes = [(90, 20)] * len(dets)
    corner = (0, 0, 220, 40)
    rects = place_labels(dets.xyxy, sizes, (400, 300), taken=[corner])
    for i, (x1, y1, x2, y2) in enumerate(rects):
        assert (x2 - x1, y2 - y1) == sizes[i]
        assert x1 >= 0 and x2 <= 400 and y1 >= 0 and y2 <= 300
        for other in [*rects[:i], corner]:
            assert x2 <= other[0] or other[2] <= x1 or y2 <= other[1] or other[3] <= y1, (
                f"label {i} {rects[i]} overlaps {other}")
    # The most confident keeps the natural spot: just above its box.
    assert rects[0] == (100, 80, 190, 100)


def test_no_label_is_hidden_under_another_in_the_drawing() -> None:
    """Rendered: every label's background shows in its class colour, at least half of a label's
    area each (the text takes the rest). Before, later labels were painted over earlier ones."""
    dets = _crowd()
    names = ["person", "bicycle", "car"]
    image = draw(np.zeros((300, 400, 3), np.uint8), dets, names)
    boxes_only = np.zeros_like(image)  # the outlines alone, as draw() paints them
    for (x1, y1, x2, y2), cls in zip(dets.xyxy.round().astype(int).tolist(),
                                     dets.class_id.tolist(), strict=True):
        cv2.rectangle(boxes_only, (x1, y1), (x2, y2), class_color(cls), 2)

    def area(i: int) -> int:  # of label i's background, as draw() sizes it (scale 0.4 here)
        cls = int(dets.class_id[i])
        text = f"{names[cls] if cls < len(names) else cls} {dets.score[i]:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        return (tw + 4) * (th + base + 4)

    for cls in sorted(set(dets.class_id.tolist())):
        mine = np.flatnonzero(dets.class_id == cls).tolist()
        n = sum(area(i) for i in mine)
        color = np.array(class_color(cls))
        near = np.abs(image.astype(int) - color).max(axis=2) < 12
        outline = np.abs(boxes_only.astype(int) - color).max(axis=2) < 12
        shown = int((near & ~outline).sum())
        assert shown > 0.45 * n, f"class {cls}: {shown} px shown of its labels' {n} px"


def test_the_first_frame_shows_no_made_up_fps(tmp_path: Path) -> None:
    assert status_lines("gate", 0, 2, None, {"infer": 20.0}) == ["gate frame 0  2 det",
                                                                  "infer 20.0 ms"]
    assert status_lines("gate", 1, 0, 9.87, {})[0] == "gate frame 1  0 det  9.9 fps"
    # Through the annotator: the first frame's overlay is narrower than the second's (no fps
    # text yet), the second one has it.
    annotator = Annotator(tmp_path / "fps.avi")
    image = np.full((240, 480, 3), 128, np.uint8)
    annotator.add(frame("gate", 0, image, Detections.empty()))
    time.sleep(0.1)
    annotator.add(frame("gate", 1, image, Detections.empty()))
    annotator.close()
    first, second = read_all(tmp_path / "fps.avi")
    dark = [int((f[5, :, :].max(axis=1) < 80).sum()) for f in (first, second)]
    assert 0 < dark[0] < dark[1], dark
