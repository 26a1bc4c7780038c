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

from lepton_edge.messages import HealthMessage, detections_payload
from lepton_edge.pipeline.stats import RunStats
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.base import Sink

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
        self._closed = False

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
        """Thread-safe: queue an outcome for every sink. After the sinks closed (a timer that
        fired during shutdown) the outcome is logged with its payload: never silently lost."""
        with self._lock:
            if not self._closed:
                self._inbox.append(outcome)
                self.wake()
                return
        log.error("outcome after the sinks closed, logged instead: %s %s", outcome.topic,
                  outcome.to_payload().decode())

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
        """Deliver the outcomes still queued, then close the sinks in reverse order; one that
        fails to close does not keep the others open."""
        self.drain()
        with self._lock:
            self._closed = True
        self.drain()
        for sink in reversed(self.sinks):
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
