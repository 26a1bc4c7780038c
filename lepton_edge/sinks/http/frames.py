"""The newest frame of each camera, drawn and JPEG-encoded lazily, at most once per frame and
width however many viewers ask (`latest.jpg`, every MJPEG stream)."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from lepton_edge.devtools.annotate import draw
from lepton_edge.results import FrameResult

Points = Sequence[tuple[float, float]]
_ZONE = (0, 200, 255)  # BGR amber
_LINE = (255, 0, 255)  # magenta


@dataclass(frozen=True)
class Overlay:
    """What to draw on a camera's frames besides the boxes: zones (closed polygons) and lines
    (polylines), id -> points in source pixels."""

    zones: Mapping[str, Points]
    lines: Mapping[str, Points]


def render(result: FrameResult, overlay: Overlay | None, width: int | None = None) -> np.ndarray:
    """The frame at most `width` wide (aspect kept) with its boxes (label, score, track id),
    zones and lines. Scaled first and drawn at that size: cheaper than drawing full size."""
    dets = result.detections
    scale = 1.0 if width is None or width >= result.width else width / result.width
    if scale != 1.0:
        size = (width, max(1, round(result.height * scale)))
        image = cv2.resize(result.image, size, interpolation=cv2.INTER_LINEAR)
        dets = replace(dets, xyxy=dets.xyxy * np.float32(scale))
    else:
        image = result.image
    names = [result.label(c) for c in dets.class_id.tolist()]
    if dets.track_id is not None:
        names = [f"{n} #{t}" if t >= 0 else n for n, t in
                 zip(names, dets.track_id.tolist(), strict=True)]
    out = draw(image, dets, names)  # draws on a copy
    if overlay is not None:
        size = (result.width, result.height)
        _polys(out, overlay.zones, _ZONE, scale, size, closed=True)
        _polys(out, overlay.lines, _LINE, scale, size, closed=False)
    return out


def _polys(out: np.ndarray, shapes: Mapping[str, Points], color: tuple[int, int, int],
           scale: float, size: tuple[int, int], *, closed: bool) -> None:
    for name, pts in shapes.items():
        a = np.asarray(pts, np.float64)
        if a.size and float(a.max()) <= 1.0:  # normalised 0-1, as the zone config allows
            a = a * np.asarray(size, np.float64)
        arr = np.round(a * scale).astype(np.int32).reshape(-1, 1, 2)
        if len(arr) < 2:
            continue
        cv2.polylines(out, [arr], closed, color, 2, cv2.LINE_AA)
        x, y = arr[0, 0]
        cv2.putText(out, name, (int(x) + 4, int(y) + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color,
                    1, cv2.LINE_AA)


class _Latest:
    __slots__ = ("cache", "encode_lock", "result")

    def __init__(self, result: FrameResult) -> None:
        self.result = result
        self.cache: dict[int, bytes] = {}  # width -> JPEG of this result
        self.encode_lock = threading.Lock()


class FrameStore:
    """Keeps each camera's newest FrameResult (`put` is O(1): the feeding thread never draws or
    encodes). `jpeg` draws and encodes on the caller's thread, once per frame and width."""

    def __init__(self, overlays: Mapping[str, Overlay] | None = None, *, quality: int = 80) -> None:
        self._overlays = dict(overlays or {})
        self._quality = quality
        # One dict item per camera, replaced whole: a single store (atomic in CPython), so the
        # feeding thread takes no lock that a viewer's thread could hold.
        self._latest: dict[str, _Latest] = {}
        self._count_lock = threading.Lock()
        self.encodes = 0  # JPEGs made, for the "once per frame" check

    def put(self, result: FrameResult) -> None:
        self._latest[result.camera] = _Latest(result)

    def cameras(self) -> list[str]:
        return sorted(list(self._latest))

    def newest(self, camera: str) -> FrameResult | None:
        latest = self._latest.get(camera)
        return None if latest is None else latest.result

    def overlay(self, camera: str) -> Overlay | None:
        return self._overlays.get(camera)

    def jpeg(self, camera: str, width: int | None = None) -> tuple[int, bytes] | None:
        """(seq, JPEG bytes) of the camera's newest frame, at most `width` wide; None before its
        first frame."""
        latest = self._latest.get(camera)
        if latest is None:
            return None
        r = latest.result
        w = r.width if width is None or width >= r.width else width
        with latest.encode_lock:  # viewers of the same frame wait for one encode
            data = latest.cache.get(w)
            if data is None:
                img = render(r, self._overlays.get(camera), w)
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
                if not ok:
                    raise RuntimeError(f"{camera}: JPEG encoding failed")
                data = buf.tobytes()
                latest.cache[w] = data
                with self._count_lock:
                    self.encodes += 1
        return r.seq, data
