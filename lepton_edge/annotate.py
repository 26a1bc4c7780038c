"""`lepton-edge run --annotate OUT.mp4`: the published frames with their boxes, written to video.

`Annotator.add` is the pipeline's `on_result` hook, called from the publishing thread for every
published frame, in publish order. Each box gets its label and score; a small overlay in the
top-left corner gives the camera, frame index, fps (of publishing) and the frame's latencies
from its payload. The writer (OpenCV, mp4v) opens at the first frame of a camera, at that
frame's size; a later frame of another size (a camera that reconnected at another resolution)
is resized to it. One camera writes OUT.mp4; each further camera writes OUT.<camera>.mp4.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from .detections import Detections
from .errors import ConfigError
from .results import FrameResult

log = logging.getLogger(__name__)

DEFAULT_FPS = 10.0
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(class_id: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR color per class (golden-ratio hue steps)."""
    hue = int((class_id * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].tolist()
    return int(b), int(g), int(r)


def draw(image: np.ndarray, dets: Detections, labels: list[str]) -> np.ndarray:
    """Draw `dets` on a copy of `image` (HxWx3 uint8 BGR); `labels[i]` names box i."""
    out = image.copy()
    scale = max(0.4, min(out.shape[:2]) / 900)
    for i, (box, score, cls) in enumerate(zip(dets.xyxy.tolist(), dets.score.tolist(),
                                               dets.class_id.tolist(), strict=True)):
        x1, y1, x2, y2 = (round(v) for v in box)
        color = class_color(cls)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
        text = f"{labels[i] if i < len(labels) else cls} {score:.2f}"
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else y1 + th + base + 4
        tx = max(0, min(x1, out.shape[1] - tw - 4))  # keep the label inside the frame
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 4, ty + base // 2), color, -1)
        cv2.putText(out, text, (tx + 2, ty - base // 2), _FONT, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


def overlay(image: np.ndarray, lines: list[str]) -> None:
    """Write `lines` in a dark box in the top-left corner of `image`, in place."""
    scale = max(0.4, min(image.shape[:2]) / 1000)
    sizes = [cv2.getTextSize(t, _FONT, scale, 1) for t in lines]
    height = sum(h + b + 4 for (_, h), b in sizes) + 6
    width = max(w for (w, _), _ in sizes) + 12
    roi = image[:height, :width]
    roi[:] = (roi * 0.35).astype(np.uint8)
    y = 4
    for text, ((_, h), b) in zip(lines, sizes, strict=True):
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
        self.fps = 0.0
        self.last: float | None = None


class Annotator:
    """Writes annotated frames to `path` (mp4v at `fps`, default 10 fps: the frame carries no
    source fps). Safe to `close()` twice; frames added after `close()` are ignored."""

    def __init__(self, path: Path, *, fps: float = DEFAULT_FPS, fourcc: str = "mp4v") -> None:
        if fps <= 0:
            raise ConfigError(f"annotate fps must be > 0, got {fps}")
        self.path = Path(path)
        self.fps = fps
        self.fourcc = fourcc
        self._tracks: dict[str, _Track] = {}
        self._lock = threading.Lock()
        self._closed = False

    def path_for(self, camera: str) -> Path:
        """OUT.mp4 for the first camera seen, OUT.<camera>.mp4 for the others."""
        if camera in self._tracks:
            return self._tracks[camera].path
        if not self._tracks:
            return self.path
        return self.path.with_name(f"{self.path.stem}.{camera}{self.path.suffix}")

    @property
    def frames(self) -> dict[str, int]:
        return {cam: t.frames for cam, t in self._tracks.items()}

    def add(self, result: FrameResult, payload: bytes) -> None:
        """The pipeline's per-frame hook: draw and write one published frame."""
        dets = result.detections
        with self._lock:
            if self._closed:
                return
            track = self._track(result)
            now = time.monotonic()
            if track.last is not None:
                inst = 1.0 / max(now - track.last, 1e-6)
                track.fps = inst if track.fps == 0 else 0.9 * track.fps + 0.1 * inst
            track.last = now
            body = _payload(payload)
            labels = [str(d.get("label", "")) for d in body.get("detections", [])]
            image = draw(result.image, dets, labels)
            lat = body.get("latency_ms", {})
            lines = [f"{result.camera} frame {result.frame}  {len(dets)} det  {track.fps:.1f} fps",
                     "  ".join(f"{k} {lat[k]:.1f} ms" for k in ("infer", "capture_to_publish")
                               if isinstance(lat.get(k), (int, float)))]
            overlay(image, [t for t in lines if t])
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
        writer = cv2.VideoWriter(str(track.path), cv2.VideoWriter.fourcc(*self.fourcc),
                                 self.fps, (w, h))
        if not writer.isOpened():
            raise ConfigError(f"--annotate {track.path}: OpenCV cannot write {self.fourcc} video "
                              f"there (is the folder writable and the name .mp4?)")
        track.writer, track.size = writer, (w, h)
        self._tracks[frame.camera] = track
        log.info("annotating camera %s to %s (%dx%d, %g fps)", frame.camera, track.path, w, h,
                 self.fps)
        return track

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for track in self._tracks.values():
                if track.writer is not None:
                    track.writer.release()
                    track.writer = None
                    log.info("annotated %d frames to %s", track.frames, track.path)


def _payload(payload: bytes) -> dict:
    try:
        body = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}
