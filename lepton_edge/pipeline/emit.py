"""Emitting: each inferred frame's `det.` payload is encoded once and handed, with the typed
result, to every sink; outcomes (events, verdicts) and health snapshots go to every sink too.
Outcomes may be decided on any thread (an inspection deadline fires on a timer): `emit` queues
them for the emitting thread, the one thread that talks to the sinks."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..messages import HealthMessage, detections_payload
from ..results import FrameResult, Outcome
from ..sinks.base import Sink
from .stats import RunStats

log = logging.getLogger(__name__)


class Emitter:
    def __init__(self, sinks: Sequence[Sink], stats: RunStats, *, model: str,
                 precision: str) -> None:
        self.sinks = list(sinks)
        self._stats = stats
        self._model = model
        self._precision = precision
        self._inbox: deque[Outcome] = deque()
        self._lock = threading.Lock()
        self.wake: Callable[[], None] = lambda: None  # set by the runner: wakes the emit thread
        self.outcomes = 0

    def frame(self, result: FrameResult, timings: dict[str, float]) -> None:
        t0 = time.perf_counter()
        timings["capture_to_publish"] = (time.monotonic() - result.t_capture) * 1000.0
        payload = detections_payload(
            camera=result.camera, seq=result.seq, frame=result.frame, ts=result.ts,
            width=result.width, height=result.height, model=self._model,
            precision=self._precision, latency_ms=timings, detections=result.detections,
            labels=result.labels)
        for sink in self.sinks:
            sink.frame(result, payload)
        timings["publish"] = (time.perf_counter() - t0) * 1000.0
        self._stats.published(result.camera, result.detections.class_id, timings)

    def emit(self, outcome: Outcome) -> None:
        """Thread-safe: queue an outcome for every sink."""
        with self._lock:
            self._inbox.append(outcome)
        self.wake()

    def drain(self) -> None:
        """Hand every queued outcome to every sink (in the emitting thread)."""
        while True:
            with self._lock:
                if not self._inbox:
                    return
                outcome = self._inbox.popleft()
            self.outcomes += 1
            for sink in self.sinks:
                sink.outcome(outcome)

    def health(self, health: HealthMessage) -> None:
        for sink in self.sinks:
            sink.health(health)

    def open(self) -> None:
        for sink in self.sinks:
            sink.open()

    def close(self) -> None:
        """Close the sinks in reverse order; one that fails to close does not keep the others
        open."""
        for sink in reversed(self.sinks):
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
