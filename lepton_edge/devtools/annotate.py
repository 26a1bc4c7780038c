"""`lepton-edge run --annotate OUT.webm`: the published frames with their boxes, written to video.

`Annotator.add` is a per-frame hook of the pipeline (inline in the emitting thread, for every
published frame in publish order): it takes the typed result (detections, class names, stage
latencies), never the payload. Each box gets its
label and score, in a colour of its class from a palette of distinct colours; labels are
placed so that they do not cover each other or the overlay (the top-left corner: camera,
frame index, publishing fps once two frames have been seen, and the frame's latencies).

The codec follows the file's suffix (`CODECS`): `.webm` VP8 (plays in browsers, and every
OpenCV wheel writes it), `.mp4` H.264 where OpenCV has an H.264 encoder, else MPEG-4 Part 2
with a warning that browsers do not play it (the opencv-python wheels have no H.264 encoder;
their VP9-in-MP4 plays in browsers but encodes at about a fifth of VP8's speed, in the
publishing thread, which would throttle the run), `.mkv` VP8, `.avi` Motion JPEG.
The writer opens at the first frame of a camera, at that frame's size; a later frame of another
size (a camera that reconnected at another resolution) is resized to it. One camera writes
OUT.webm; each further camera writes OUT.<camera>.webm.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError
from lepton_edge.results import FrameResult

log = logging.getLogger(__name__)

DEFAULT_FPS = 10.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX

# Suffix -> fourccs to try, best first.
CODECS: dict[str, tuple[str, ...]] = {
    ".webm": ("VP80",),
    ".mp4": ("avc1", "mp4v"),
    ".mkv": ("VP80",),
    ".avi": ("MJPG",),
}
# Said when a fallback is what gets written.
_CAVEATS = {"mp4v": "MPEG-4 Part 2, which browsers do not play; name the file .webm (VP8) "
                    "for a browser"}

# 20 colours chosen to be told apart (Sasha Trubetskoy's list), in RGB, indexed by class id
# modulo 20. With COCO ids the classes a camera watches most get the most distinct ones:
# person red, bicycle green, car yellow, motorcycle blue, bus cyan, truck magenta.
_PALETTE_RGB = (
    (0xE6, 0x19, 0x4B), (0x3C, 0xB4, 0x4B), (0xFF, 0xE1, 0x19), (0x43, 0x63, 0xD8),
    (0xF5, 0x82, 0x31), (0x42, 0xD4, 0xF4), (0x91, 0x1E, 0xB4), (0xF0, 0x32, 0xE6),
    (0xBF, 0xEF, 0x45), (0xFA, 0xBE, 0xD4), (0x46, 0x99, 0x90), (0xDC, 0xBE, 0xFF),
    (0x9A, 0x63, 0x24), (0xFF, 0xFA, 0xC8), (0x80, 0x00, 0x00), (0xAA, 0xFF, 0xC3),
    (0x80, 0x80, 0x00), (0xFF, 0xD8, 0xB1), (0x00, 0x00, 0x75), (0xA9, 0xA9, 0xA9),
)
PALETTE: tuple[tuple[int, int, int], ...] = tuple((b, g, r) for r, g, b in _PALETTE_RGB)

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive)


def class_color(class_id: int) -> tuple[int, int, int]:
    """The BGR colour of a class: stable, and distinct from its neighbours in the palette."""
    return PALETTE[class_id % len(PALETTE)]


def _text_color(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    b, g, r = bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 110 else (255, 255, 255)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _clamp(x: int, y: int, w: int, h: int, width: int, height: int) -> Rect:
    x = max(0, min(x, width - w))
    y = max(0, min(y, height - h))
    return (x, y, x + w, y + h)


def place_labels(boxes: np.ndarray, sizes: Sequence[tuple[int, int]], frame_wh: tuple[int, int],
                 taken: Sequence[Rect] = ()) -> list[Rect]:
    """Where to put each box's label (w x h in `sizes`) so that no two labels overlap, nor any
    rectangle in `taken`, all inside the frame (`frame_wh` = width, height). Boxes earlier in
    `boxes` (N x 4 xyxy) choose first, so pass them most confident first. Each label tries,
    in order: above the box's top-left corner, inside it, below the box, inside the bottom,
    then the same on the right, then beside it; failing all, the nearest free spot above or
    below its box; failing that (a frame full of labels), the first try."""
    width, height = frame_wh
    placed: list[Rect] = list(taken)
    out: list[Rect] = []
    for (x1, y1, x2, y2), (w, h) in zip(np.asarray(boxes).round().astype(int).tolist(), sizes,
                                        strict=True):
        rect = _clamp(x1, y1 - h, w, h, width, height)
        for x, y in _spots(x1, y1, x2, y2, w, h, height):
            spot = _clamp(x, y, w, h, width, height)
            if not any(_overlaps(spot, p) for p in placed):
                rect = spot
                break
        placed.append(rect)
        out.append(rect)
    return out


def _spots(x1: int, y1: int, x2: int, y2: int, w: int, h: int,
           height: int) -> Iterator[tuple[int, int]]:
    """Top-left corners for a w x h label of box x1 y1 x2 y2, in order of preference (lazily:
    most labels take one of the first)."""
    yield from ((x1, y1 - h), (x1, y1), (x1, y2), (x1, y2 - h),
                (x2 - w, y1 - h), (x2 - w, y1), (x2 - w, y2), (x2 - w, y2 - h),
                (x2, y1), (x1 - w, y1))
    step = max(1, h // 2)
    for k in range(1, 2 * height // step + 2):  # then away from the box, nearest first
        for x in (x1, x2 - w, x2, x1 - w):
            yield (x, y1 - h - k * step)
            yield (x, y2 + k * step)


def draw(image: np.ndarray, dets: Detections, labels: Sequence[str],
         taken: Sequence[Rect] = ()) -> np.ndarray:
    """Draw `dets` on a copy of `image` (HxWx3 uint8 BGR). `labels`: the model's class names,
    indexed by class id (an id outside them is written as its number). Labels avoid each
    other and the rectangles in `taken`; one moved away from its box is tied to it by a line."""
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 900)
    order = np.argsort(-dets.score, kind="stable")
    texts, sizes = [], []
    for i in order.tolist():
        cls = int(dets.class_id[i])
        name = labels[cls] if 0 <= cls < len(labels) else str(cls)
        texts.append(f"{name} {float(dets.score[i]):.2f}")
        (tw, th), base = cv2.getTextSize(texts[-1], _FONT, scale, 1)
        sizes.append((tw + 4, th + base + 4))
    for i in order.tolist():
        x1, y1, x2, y2 = (round(v) for v in dets.xyxy[i].tolist())
        cv2.rectangle(out, (x1, y1), (x2, y2), class_color(int(dets.class_id[i])), 2)
    rects = place_labels(dets.xyxy[order], sizes, (out.shape[1], out.shape[0]), taken)
    for i, rect in zip(order.tolist(), rects, strict=True):  # lines first: labels cover them
        x1, y1, x2, y2 = (round(v) for v in dets.xyxy[i].tolist())
        lx1, ly1, _, ly2 = rect
        if ly2 < y1 - 2 or ly1 > y2 + 2:  # moved off its box: a leader line back to it
            above = ly2 < y1
            cv2.line(out, (lx1 + 2, ly2 if above else ly1), (x1 + 2, y1 if above else y2),
                     class_color(int(dets.class_id[i])), 1, cv2.LINE_AA)
    for i, text, rect in zip(order.tolist(), texts, rects, strict=True):
        color = class_color(int(dets.class_id[i]))
        lx1, ly1, lx2, ly2 = rect
        cv2.rectangle(out, (lx1, ly1), (lx2 - 1, ly2 - 1), color, -1)
        (_, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        cv2.putText(out, text, (lx1 + 2, ly1 + 2 + th), _FONT, scale, _text_color(color), 1,
                    cv2.LINE_AA)
    return out


def status_lines(camera: str, index: int, detections: int, fps: float | None,
                 latency_ms: Mapping[str, float]) -> list[str]:
    """The overlay's text. `fps` is None until it is known (two frames seen): a first frame
    that says "0.0 fps" is wrong, not unknown."""
    head = f"{camera} frame {index}  {detections} det"
    if fps is not None:
        head += f"  {fps:.1f} fps"
    lat = "  ".join(f"{k} {latency_ms[k]:.1f} ms" for k in ("infer", "capture_to_publish")
                    if isinstance(latency_ms.get(k), (int, float)))
    return [t for t in (head, lat) if t]


def _overlay_layout(shape: tuple[int, ...], lines: Sequence[str]) -> tuple[float, Rect]:
    scale = max(0.4, min(shape[:2]) / 1000)
    sizes = [cv2.getTextSize(t, _FONT, scale, 1) for t in lines]
    height = sum(h + b + 4 for (_, h), b in sizes) + 6
    width = max(w for (w, _), _ in sizes) + 12
    return scale, (0, 0, min(width, shape[1]), min(height, shape[0]))


def overlay(image: np.ndarray, lines: Sequence[str]) -> None:
    """Write `lines` in a dark box in the top-left corner of `image`, in place."""
    scale, (_, _, width, height) = _overlay_layout(image.shape, lines)
    roi = image[:height, :width]
    roi[:] = (roi * 0.35).astype(np.uint8)
    y = 4
    for text in lines:
        (_, h), b = cv2.getTextSize(text, _FONT, scale, 1)
        y += h + 2
        cv2.putText(image, text, (6, y), _FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
        y += b + 2


class _Track:
    """The writer and fps estimate of one camera."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] = (0, 0)
        self.frames = 0
        self.dt = 0.0  # smoothed interval between frames; 0 until two frames are seen
        self.last: float | None = None

    def tick(self, now: float) -> float | None:
        """Count a frame at `now` (monotonic seconds); returns the fps, None while unknown."""
        if self.last is not None:
            # Average the interval, not its inverse: 1/dt of jittery frames overstates fps.
            dt = max(now - self.last, 1e-6)
            self.dt = dt if self.dt == 0 else 0.9 * self.dt + 0.1 * dt
        self.last = now
        return 1.0 / self.dt if self.dt > 0 else None


def codecs_for(path: Path) -> tuple[str, ...]:
    """The fourccs to try for `path`, by its suffix; a ConfigError for a suffix not in CODECS."""
    try:
        return CODECS[path.suffix.lower()]
    except KeyError:
        raise ConfigError(f"--annotate {path}: cannot tell the video format from "
                          f"{path.suffix or 'no suffix'!r}; name it {', '.join(CODECS)} "
                          f"(.webm plays in browsers)") from None


class Annotator:
    """Writes annotated frames to `path` at `fps` (default 10 fps: the frame carries no source
    fps), in the codec its suffix calls for (`fourcc` forces one). Safe to `close()` twice;
    frames added after `close()` are ignored."""

    def __init__(self, path: Path, *, fps: float = DEFAULT_FPS, fourcc: str | None = None) -> None:
        if fps <= 0:
            raise ConfigError(f"annotate fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self._codecs = (fourcc,) if fourcc else codecs_for(self.path)
        self.fourcc: str | None = fourcc  # the one in use, once the first writer opened
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._closed = False

    def path_for(self, camera: str) -> Path:
        """OUT.webm for the first camera seen, OUT.<camera>.webm for the others."""
        if camera in self._tracks:
            return self._tracks[camera].path
        if not self._tracks:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{camera}{self.path.suffix}")

    @property
    def frames(self) -> dict[str, int]:
        return {cam: t.frames for cam, t in self._tracks.items()}

    def add(self, result: FrameResult, payload: bytes = b"") -> None:
        """The pipeline's per-frame hook (inline in the emitting thread): draw and write one
        published frame from its typed result; the payload is not re-parsed."""
        dets = result.detections
        with self._lock:
            if self._closed:
                return
            track = self._track(result)
            fps = track.tick(time.monotonic())
            lines = status_lines(result.camera, result.frame, len(dets), fps, result.latency_ms)
            _, corner = _overlay_layout(result.image.shape, lines)
            image = draw(result.image, dets, result.labels, taken=[corner])
            overlay(image, lines)
            if (image.shape[1], image.shape[0]) != track.size:
                image = cv2.resize(image, track.size, interpolation=cv2.INTER_AREA)
            assert track.writer is not None
            track.writer.write(image)
            track.frames += 1

    def _track(self, frame: FrameResult) -> _Track:
        track = self._tracks.get(frame.camera)
        if track is not None:
            return track
        track = _Track(self.path_for(frame.camera))
        h, w = frame.image.shape[:2]
        try:
            track.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--annotate {track.path}: cannot create its folder "
                              f"({err.strerror or err})") from err
        track.writer = self._open(track.path, (w, h))
        track.size = (w, h)
        self._tracks[frame.camera] = track
        log.info("annotating camera %s to %s (%s, %dx%d, %g fps)", frame.camera, track.path,
                 self.fourcc, w, h, self.fps)
        return track

    def _open(self, path: Path, size: tuple[int, int]) -> cv2.VideoWriter:
        codecs = (self.fourcc,) if self.fourcc else self._codecs
        for code in codecs:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*code), self.fps, size)
            if writer.isOpened():
                if self.fourcc is None and code in _CAVEATS:
                    log.warning("--annotate %s: this OpenCV has no %s encoder, writing %s: %s",
                                path, "/".join(codecs[:codecs.index(code)]), code,
                                _CAVEATS[code])
                self.fourcc = code
                return writer
            writer.release()
        raise ConfigError(f"--annotate {path}: OpenCV cannot write {'/'.join(codecs)} video "
                          f"there (is the folder writable? .webm works with every OpenCV wheel)")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for track in self._tracks.values():
                if track.writer is not None:
                    track.writer.release()
                    track.writer = None
                    log.info("annotated %d frames to %s", track.frames, track.path)
