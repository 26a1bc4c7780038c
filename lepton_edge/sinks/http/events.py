"""The recent events (and verdicts), parsed once from their wire payloads, for `/api/events`
and the live page. An event's start, updates and end collapse into one entry (the newest)."""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any

log = logging.getLogger(__name__)


class EventLog:
    def __init__(self, keep: int = 200) -> None:
        self._keep = keep
        self._events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verdicts: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
        except ValueError:
            log.warning("http: %s payload is not JSON; not listed", topic)
            return
        if not isinstance(body, dict):
            return
        with self._lock:
            if topic.startswith("event."):
                key = str(body.get("event_id"))
                first = self._events.pop(key, None)
                entry = {**body, "ts_first": (first or body).get("ts_first", body.get("ts"))}
                if body.get("snapshot") is None and first is not None:
                    entry["snapshot"] = first.get("snapshot")  # an update without a new one
                self._events[key] = entry
                while len(self._events) > self._keep:
                    self._events.popitem(last=False)
            elif topic.startswith("verdict."):
                self._verdicts.append(body)
                del self._verdicts[:-self._keep]

    def recent(self, camera: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            items = list(reversed(self._events.values()))
        return [e for e in items if camera is None or e.get("camera") == camera][:limit]

    def verdicts(self, camera: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            items = list(reversed(self._verdicts))
        return [v for v in items if camera is None or v.get("camera") == camera][:limit]

    def snapshot_name(self, event_id: str) -> str | None:
        with self._lock:
            entry = self._events.get(event_id)
        name = None if entry is None else entry.get("snapshot")
        return name if isinstance(name, str) else None
