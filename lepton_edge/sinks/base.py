"""The sink protocol, and a base class that runs a sink on its own thread.

Every sink is fed the same typed values by the emitting stage: each inferred frame (with its
encoded `det.` payload, so no sink encodes it again), each outcome (event, verdict) and each
health snapshot. None may stall the pipeline: `QueuedSink` hands them to its own thread through
bounded queues. Frames are droppable (the oldest goes when the queue is full, and is counted);
outcomes are not: they wait in a larger bounded queue while the sink is slow or down, and an
outcome that finds even that full is logged with its payload at ERROR level (logged, never
silently dropped).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from lepton_edge.messages import HealthMessage
from lepton_edge.results import FrameResult, Outcome

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def open(self) -> None: ...

    def frame(self, result: FrameResult, payload: bytes) -> None: ...

    def outcome(self, outcome: Outcome) -> None: ...

    def health(self, health: HealthMessage) -> None: ...

    def close(self) -> None: ...


class QueuedSink:
    """A sink whose deliveries run on its own thread. Subclasses implement `deliver_frame`,
    `deliver_outcome` and `deliver_health` (each may block or raise: that costs this sink only;
    an exception is logged and the item counted as failed) and may override `on_open` and
    `on_close`. `deliver_outcome` returning False means "not delivered, try again later": the
    outcome stays at the head of the queue and is retried after `retry_interval` seconds, in
    order (a broker that is down)."""

    name = "sink"
    retry_interval = 0.5

    def __init__(self, *, frame_queue: int = 2, outcome_queue: int = 10_000) -> None:
        self._frames: deque[tuple[FrameResult, bytes]] = deque(maxlen=frame_queue)
        self._outcomes: deque[Outcome] = deque()
        self._outcome_cap = outcome_queue
        self._health: HealthMessage | None = None
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.frames_dropped = 0
        self.outcomes_lost = 0
        self.failures = 0

    # ---------------------------------------------------------------- fed by the pipeline

    def open(self) -> None:
        self.on_open()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def frame(self, result: FrameResult, payload: bytes) -> None:
        with self._wake:
            if len(self._frames) == self._frames.maxlen:
                self.frames_dropped += 1
            self._frames.append((result, payload))
            self._wake.notify()

    def outcome(self, outcome: Outcome) -> None:
        with self._wake:
            if len(self._outcomes) >= self._outcome_cap:
                self.outcomes_lost += 1
                log.error("%s: %d outcomes queued, delivery is down; logging instead: %s %s",
                          self.name, len(self._outcomes), outcome.topic,
                          outcome.to_payload().decode())
                return
            self._outcomes.append(outcome)
            self._wake.notify()

    def health(self, health: HealthMessage) -> None:
        with self._wake:
            self._health = health
            self._wake.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (outcomes first), then stop; outcomes still undelivered after
        `timeout` are logged."""
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._wake:
            left = list(self._outcomes)
            self._outcomes.clear()
        for o in left:
            self.outcomes_lost += 1
            log.error("%s: closing with an undelivered outcome: %s %s", self.name, o.topic,
                      o.to_payload().decode())
        self.on_close()

    # ---------------------------------------------------------------- for subclasses

    def on_open(self) -> None:
        pass

    def on_close(self) -> None:
        pass

    def deliver_frame(self, result: FrameResult, payload: bytes) -> None:
        pass

    def deliver_outcome(self, outcome: Outcome) -> bool:
        return True

    def deliver_health(self, health: HealthMessage) -> None:
        pass

    @property
    def pending_outcomes(self) -> int:
        with self._wake:
            return len(self._outcomes)

    # ---------------------------------------------------------------- the sink's thread

    def _run(self) -> None:
        retry_at = 0.0
        while True:
            outcome = item = health = None
            with self._wake:
                while True:
                    if self._outcomes and time.monotonic() >= retry_at:
                        outcome = self._outcomes[0]
                    elif self._health is not None:
                        health, self._health = self._health, None
                    elif self._frames:
                        item = self._frames.popleft()
                    elif self._closing:
                        return  # outcomes still waiting for a retry are logged by close()
                    else:
                        wait = max(0.01, retry_at - time.monotonic()) if self._outcomes else None
                        self._wake.wait(wait)
                        continue
                    break
            if outcome is not None:
                if not self._deliver_outcome(outcome):
                    retry_at = time.monotonic() + self.retry_interval
                    continue
                with self._wake:
                    self._outcomes.popleft()
            elif health is not None:
                self._call(self.deliver_health, health)
            elif item is not None:
                self._call(self.deliver_frame, *item)

    def _deliver_outcome(self, outcome: Outcome) -> bool:
        try:
            return self.deliver_outcome(outcome)
        except Exception:
            self.failures += 1
            log.exception("%s: delivering %s failed; will retry", self.name, outcome.topic)
            return False

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:
            self.failures += 1
            log.exception("%s: %s failed", self.name, fn.__name__)
