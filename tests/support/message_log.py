"""A real subscriber on a background thread that keeps every message with its arrival time,
so a test can act on the daemon (signals, config edits) while messages keep coming."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lepton_edge.messages import DetectionMessage, HealthMessage, Message
from lepton_edge.subscribe import Subscriber


class MessageLog:
    """`with MessageLog(endpoint) as log:`; connect before the daemon starts to miss nothing
    (ZeroMQ retries the connection until the daemon binds)."""

    def __init__(self, endpoint: str) -> None:
        self._sub = Subscriber(endpoint)
        self._lock = threading.Lock()
        self._items: list[tuple[float, Message]] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            msg = self._sub.receive(timeout=0.1)
            if msg is not None:
                with self._lock:
                    self._items.append((time.monotonic(), msg))

    def items(self, since: float = 0.0) -> list[tuple[float, Message]]:
        with self._lock:
            return [(t, m) for t, m in self._items if t >= since]

    def detections(self, camera: str | None = None, since: float = 0.0) -> list[DetectionMessage]:
        return [m for _, m in self.items(since) if isinstance(m, DetectionMessage)
                and (camera is None or m.camera == camera)]

    def health(self, since: float = 0.0) -> list[HealthMessage]:
        return [m for _, m in self.items(since) if isinstance(m, HealthMessage)]

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    @property
    def missed(self) -> dict[str, int]:
        """Gaps in each camera's seq the subscriber counted (messages lost on the way)."""
        return dict(self._sub.missed)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2.0)
        self._sub.close()

    def __enter__(self) -> MessageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
