"""A subscriber that records everything a daemon publishes, with arrival times, for fault tests.

    with Watch(daemon.endpoint) as w:
        w.until(lambda: w.count("door") >= 10, timeout=30)
        ...  # cause a fault
        w.until(lambda: w.state("door") == "retrying", timeout=10)

`until` keeps receiving while it waits, so arrival times are exact to the poll (50 ms). Each
fault test prints one results-table row (`row()`): fault, recovery time, frames lost, pass.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lepton_edge.messages import CameraHealth, DetectionMessage, HealthMessage
from lepton_edge.subscribe import Subscriber


@dataclass
class Watch:
    endpoint: str
    records: list[tuple[float, DetectionMessage | HealthMessage]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sub = Subscriber(self.endpoint)

    def pump(self, seconds: float) -> None:
        """Receive for `seconds`."""
        self.until(lambda: False, seconds, fail=False)

    def until(self, condition: Callable[[], bool], timeout: float, *, fail: bool = True,
              what: str = "") -> float:
        """Receive until `condition()` holds; returns the monotonic time it first held. On
        timeout: AssertionError (with `what`), or the current time when `fail` is False."""
        deadline = time.monotonic() + timeout
        while True:
            if condition():
                return time.monotonic()
            if time.monotonic() >= deadline:
                if fail:
                    raise AssertionError(f"not within {timeout:g} s: {what or condition}; "
                                         f"last health: {self.last_health()}")
                return time.monotonic()
            msg = self.sub.receive(timeout=0.05)
            if msg is not None:
                self.records.append((time.monotonic(), msg))

    def dets(self, camera: str, since: float = 0.0) -> list[DetectionMessage]:
        return [m for t, m in self.records
                if t >= since and isinstance(m, DetectionMessage) and m.camera == camera]

    def det_times(self, camera: str) -> list[float]:
        return [t for t, m in self.records
                if isinstance(m, DetectionMessage) and m.camera == camera]

    def count(self, camera: str, since: float = 0.0) -> int:
        return len(self.dets(camera, since))

    def health(self) -> list[HealthMessage]:
        return [m for _, m in self.records if isinstance(m, HealthMessage)]

    def last_health(self) -> HealthMessage | None:
        h = self.health()
        return h[-1] if h else None

    def camera(self, camera: str) -> CameraHealth | None:
        h = self.last_health()
        return next((c for c in h.cameras if c.id == camera), None) if h else None

    def state(self, camera: str) -> str | None:
        c = self.camera(camera)
        return c.state if c else None

    def states(self, camera: str) -> list[str]:
        """The camera's states as health reported them, consecutive repeats collapsed."""
        out: list[str] = []
        for h in self.health():
            for c in h.cameras:
                if c.id == camera and (not out or out[-1] != c.state):
                    out.append(c.state)
        return out

    @property
    def missed(self) -> dict[str, int]:
        return self.sub.missed

    def close(self) -> None:
        self.sub.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def max_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def row(fault: str, recovery_s: float | None, frames_lost: int | str, passed: bool) -> str:
    """One line of the results table, printed (pytest -s shows it) and returned."""
    rec = "-" if recovery_s is None else f"{recovery_s:.2f} s"
    line = f"RESULT | {fault} | {rec} | {frames_lost} | {'pass' if passed else 'FAIL'}"
    print("\n" + line)
    return line
