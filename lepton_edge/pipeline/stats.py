"""Run statistics: per-stage latency rings, per-camera counters and the smoothed fps. One object,
written by the emitting stage, read by health, metrics, `bench` and the run summary."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# The per-frame latencies every run reports, in pipeline order.
STAGES = ("capture", "preprocess", "infer", "decode", "analyse", "publish", "capture_to_publish")


class LatencyRecorder:
    """Per-stage latencies (ms) in bounded rings, for p50/p99 in health, metrics and bench."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._rings: dict[str, deque[float]] = {s: deque(maxlen=size) for s in STAGES}
        self._counts: dict[str, int] = {}

    def add(self, timings: Mapping[str, float]) -> None:
        for k, v in timings.items():
            self._counts[k] = self._counts.get(k, 0) + 1
            ring = self._rings.get(k)
            if ring is None:  # not setdefault: that would build a deque per call
                ring = self._rings[k] = deque(maxlen=self._size)
            ring.append(v)

    def count(self, stage: str) -> int:
        """Samples recorded for `stage` so far (the ring keeps the newest `size`)."""
        return self._counts.get(stage, 0)

    def recent(self, stage: str, n: int) -> np.ndarray:
        """The newest `n` samples of `stage` (fewer where the ring holds fewer)."""
        ring = self._rings.get(stage, ())
        arr = np.fromiter(ring, float, len(ring))
        return arr[-n:] if n > 0 else arr[:0]

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, ring in self._rings.items():
            if ring:
                arr = np.fromiter(ring, float, len(ring))
                p50, p99 = np.percentile(arr, [50, 99])
                out[k] = {"p50": float(p50), "p99": float(p99), "mean": float(arr.mean()),
                          "n": len(arr)}
        return out


def format_latency(latency: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per stage, `      infer: p50   19.80 ms   p99   31.20 ms`, in pipeline order."""
    return [f"  {stage:>18}: p50 {latency[stage]['p50']:7.2f} ms   "
            f"p99 {latency[stage]['p99']:7.2f} ms" for stage in STAGES if stage in latency]


@dataclass
class CameraCounters:
    seq: int = 0  # the next det. message's seq
    published: int = 0
    skipped: int = 0  # captured frames the analyser did not admit (detect rate, motion gate)
    detections: dict[int, int] = field(default_factory=dict)  # class_id -> count


class RunStats:
    def __init__(self) -> None:
        self.latency = LatencyRecorder()
        self.cameras: dict[str, CameraCounters] = {}
        self.started_at = time.monotonic()
        self.published_frames = 0
        self.first_result = threading.Event()
        self._dt = 0.0  # smoothed interval between published frames
        self._last_pub_t: float | None = None
        self._lock = threading.Lock()

    def camera(self, camera: str) -> CameraCounters:
        with self._lock:
            c = self.cameras.get(camera)
            if c is None:
                c = self.cameras[camera] = CameraCounters()
            return c

    def skipped(self, camera: str) -> None:
        self.camera(camera).skipped += 1

    def published(self, camera: str, class_ids: np.ndarray, timings: Mapping[str, float]) -> None:
        c = self.camera(camera)
        c.seq += 1
        c.published += 1
        for cls in class_ids.tolist():
            c.detections[cls] = c.detections.get(cls, 0) + 1
        self.latency.add(timings)
        self.published_frames += 1
        now = time.monotonic()
        if self._last_pub_t is not None:
            # Average the interval, not its inverse: 1/dt of jittery frames overstates fps.
            dt = now - self._last_pub_t
            self._dt = dt if self._dt == 0 else 0.95 * self._dt + 0.05 * dt
        self._last_pub_t = now
        self.first_result.set()

    @property
    def fps(self) -> float:
        return 1.0 / self._dt if self._dt > 0 else 0.0

    @property
    def active_seconds(self) -> float:
        """Seconds from the start to the last published frame (the run's working time)."""
        return (self._last_pub_t or time.monotonic()) - self.started_at

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    def detections_by_label(self, labels: tuple[str, ...]) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in list(self.cameras.values()):
            for cls, n in list(c.detections.items()):
                name = labels[cls] if 0 <= cls < len(labels) else str(cls)
                out[name] = out.get(name, 0) + n
        return out
