"""Verdicts on MQTT from the durable verdict log: the inspection cameras' verdicts are not
queued in memory by the MQTT bridge (`lepton_edge.sinks.mqtt`) but published from the log the
station commits them to, after a delivery mark the broker's acknowledgements advance."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lepton_edge.results import Outcome
from lepton_edge.sinks.verdict_log import DeliveryMarks

log = logging.getLogger(__name__)

STALE_PENDING_S = 300.0  # a trigger seen undecided this long no longer holds a mark back
_WINDOW = 1000  # verdicts in flight at most (room in paho's queue for the rest)
_PAGE = 256  # verdicts read from the log at a time
_RECENT = 4096  # trigger ids per camera remembered as sent, to skip their live copy


class _Camera:
    """One inspection camera's delivery state; only the delivery thread touches it."""

    def __init__(self, store: DeliveryMarks, mark: int) -> None:
        self.store = store
        self.mark = mark  # durable: every verdict up to it was acknowledged
        self.scan = mark  # every decided verdict up to it was handed to paho in this run
        self.sent: set[int] = set()  # trigger ids > mark handed to paho in this run
        self.acked: set[int] = set()  # trigger ids > mark the broker acknowledged
        self.undecided: dict[int, float] = {}  # trigger id -> when first seen undecided


class LogDelivery:
    """Verdicts of the inspection cameras, published from their durable verdict log.

    The station commits a verdict to the log before it emits it, so the log is the queue: a
    thread (`sink-mqtt-verdicts`) publishes, per camera and in trigger order, every decided
    verdict after the camera's delivery mark that this run has not handed to paho yet, each time
    a verdict is announced, at each (re)connect and once a second. The mark (`DeliveryMarks`,
    table `delivered` of the log file, consumer `mqtt:<client_id>`) is the highest trigger id
    up to which the broker acknowledged everything: PUBACK/PUBCOMP for QoS 1/2, written to the
    socket for QoS 0 (paho's `on_publish`). A trigger still waiting for its verdict holds the
    mark back (for at most `STALE_PENDING_S` of this run), so a verdict decided late is not
    skipped (one decided later still goes out, from memory). The
    memory it needs is the in-flight window, not the backlog: an outage of any length, or a
    restart while the broker is down, loses nothing, and repeats at most what was in flight
    (at-least-once). A verdict the log lacks (its write failed) goes out from memory once the
    log has been read past it.

    The announced verdict is the station's own object: its payload is the log's, byte for byte
    (the station writes `json.dumps(verdict.to_dict())` and publishes `to_payload()`).
    """

    def __init__(self, logs: Mapping[str, Path], consumer: str, *,
                 publish: Callable[[str, bytes], Any], connected: Callable[[], bool],
                 qos: int, held: int) -> None:
        self._logs = dict(logs)
        self._consumer = consumer
        self._publish = publish
        self._is_connected = connected
        self._qos = qos
        self._held_cap = held
        self._window = max(1, min(_WINDOW, held // 2))
        self.cameras = frozenset(logs)
        self._stores: dict[Path, DeliveryMarks] = {}
        self._cams: dict[str, _Camera] = {}
        self._mids: dict[int, tuple[str, int, Any]] = {}  # paho mid -> camera, trigger, info
        self._acks: deque[int] = deque()  # mids from on_publish (paho's thread)
        self._unverified: list[int] = []
        self._connects = 0
        self._seen_connects = 0
        # Shared with the feeding thread, under _lock:
        self._lock = threading.Lock()
        self._held: dict[str, OrderedDict[int, Outcome]] = {c: OrderedDict() for c in logs}
        self._rewind: dict[str, int] = {}
        self._recent: dict[str, OrderedDict[int, None]] = {c: OrderedDict() for c in logs}
        self._gen = 0  # announcements and connects, so `idle` is never set over a new one
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = 0
        self.failures = 0

    def marks(self) -> dict[str, int]:
        """camera -> the delivery mark (acknowledged up to it), as last stored."""
        return {c: cam.mark for c, cam in self._cams.items()}

    # ---------------------------------------------------------------- lifecycle

    def open(self) -> None:
        for camera, path in self._logs.items():
            path = Path(path)
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = DeliveryMarks(path, self._consumer).open()
            self._cams[camera] = _Camera(store, store.mark(camera))
        waiting = {c: cam.store.waiting(c, cam.mark) for c, cam in self._cams.items()}
        if any(waiting.values()):
            log.info("mqtt: verdicts in the log not yet acknowledged by the broker: %s; they go "
                     "out once it is connected", ", ".join(f"{c} {n}" for c, n in
                                                          waiting.items() if n))
        self._thread = threading.Thread(target=self._loop, name="sink-mqtt-verdicts",
                                        daemon=True)
        self._thread.start()

    def close(self, timeout: float) -> None:
        """Wait up to `timeout` for what is readable to be acknowledged (when connected), then
        stop; what is left stays in the log for the next start."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while self._is_connected() and not self._idle.is_set() and time.monotonic() < deadline:
            self._wake.set()
            self._idle.wait(0.05)
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        self._thread = None
        try:
            self._take_acks()
            self._advance_marks()
            waiting = {c: cam.store.waiting(c, cam.mark) for c, cam in self._cams.items()}
        except Exception:
            log.exception("mqtt: storing the verdict delivery marks failed")
            waiting = {}
        if any(waiting.values()):
            log.warning("mqtt: closing with verdicts the broker did not acknowledge: %s; they "
                        "stay in the verdict log and go out after the next start",
                        ", ".join(f"{c} {n}" for c, n in waiting.items() if n))
        with self._lock:
            left = [(c, t, o) for c, held in self._held.items() for t, o in held.items()]
            for held in self._held.values():
                held.clear()
        for camera, t, o in left:
            if self._logged(camera, t):
                continue  # it goes out after the next start
            self.lost += 1
            log.error("mqtt: closing with a verdict the log lacks, undelivered: %s %s", o.topic,
                      o.to_payload().decode())
        for store in self._stores.values():
            store.close()

    def _logged(self, camera: str, t: int) -> bool:
        cam = self._cams[camera]
        try:
            return t > cam.mark and any(d for _, d in cam.store.between(camera, t - 1, t))
        except Exception:
            log.exception("mqtt: reading the verdict log failed")
            return False

    # ---------------------------------------------------------------- from other threads

    def announce(self, camera: str, outcome: Outcome, trigger_id: int | None) -> None:
        """The station emitted a verdict (the log already holds it): wake the thread. It is
        kept in memory only until the log has been read past it (in case the log lacks it)."""
        with self._lock:
            if trigger_id is not None:
                if trigger_id in self._recent[camera]:
                    return  # already out from the log
                self._rewind[camera] = min(self._rewind.get(camera, trigger_id - 1),
                                           trigger_id - 1)
                held = self._held[camera]
                if len(held) >= self._held_cap:
                    held.popitem(last=False)  # in the log (unless its write failed)
                held[trigger_id] = outcome
            self._gen += 1
        self._idle.clear()
        self._wake.set()

    def connected(self) -> None:
        """paho's thread: a (re)connect; the thread reads the log again from the marks."""
        self._connects += 1
        with self._lock:
            self._gen += 1
        self._idle.clear()
        self._wake.set()

    def acked(self, mid: int) -> None:
        """paho's thread (on_publish, under paho's lock: no lock taken here). Every publish
        comes here (counts, health too); only a verdict's wakes the thread (one stored a moment
        late is taken at the next wake)."""
        self._acks.append(mid)
        if mid in self._mids:
            self._wake.set()

    # ---------------------------------------------------------------- the delivery thread

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.05 if self._unverified else 1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._step()
            except Exception:
                self.failures += 1
                log.exception("mqtt: delivering verdicts from the log failed; retrying")
                self._stop.wait(1.0)

    def _step(self) -> None:
        with self._lock:
            gen = self._gen
        if self._connects != self._seen_connects:
            self._seen_connects = self._connects
            self._reconnected()
        self._take_acks()
        with self._lock:
            before = {c: list(h) for c, h in self._held.items() if h}
        complete = self._is_connected()
        for camera, cam in self._cams.items():
            if not complete:
                break
            complete = self._pump(camera, cam)
        if complete:
            self._flush_held(before)
        self._advance_marks()
        with self._lock:
            idle = (complete and gen == self._gen and not any(self._held.values())
                    and not self._mids)
        if idle:
            self._idle.set()
        else:
            self._idle.clear()

    def _reconnected(self) -> None:
        if self._qos == 0:  # QoS 0 not yet written died with the link: send it again
            for mid, (camera, t, info) in list(self._mids.items()):
                if not info.is_published():
                    del self._mids[mid]
                    self._cams[camera].sent.discard(t)
        for cam in self._cams.values():
            cam.scan = cam.mark

    def _pump(self, camera: str, cam: _Camera) -> bool:
        """Hand paho the decided verdicts after `scan`; False when paho refused one."""
        with self._lock:
            rewind = self._rewind.pop(camera, None)
        if rewind is not None:
            cam.scan = max(cam.mark, min(cam.scan, rewind))
        while True:
            rows = cam.store.decided_after(camera, cam.scan, _PAGE)
            for t, payload in rows:
                if t not in cam.sent:
                    if len(self._mids) >= self._window or not self._send(camera, cam, t,
                                                                          payload):
                        return False
                    with self._lock:
                        self._held[camera].pop(t, None)
                cam.scan = t
            if len(rows) < _PAGE:
                return True

    def _send(self, camera: str, cam: _Camera, t: int, payload: bytes) -> bool:
        info = self._publish(camera, payload)
        if info is None:
            return False
        cam.sent.add(t)
        self._mids[info.mid] = (camera, t, info)
        with self._lock:
            recent = self._recent[camera]
            recent[t] = None
            if len(recent) > _RECENT:
                recent.popitem(last=False)
        return True

    def _flush_held(self, before: dict[str, list[int]]) -> None:
        """Verdicts announced before this pass that the log did not have: from memory."""
        for camera, ids in before.items():
            cam = self._cams[camera]
            for t in ids:
                with self._lock:
                    outcome = self._held[camera].get(t)
                if outcome is None or t in cam.sent:
                    continue
                log.warning("mqtt: verdict %s/%d is not in the verdict log; sent from memory",
                            camera, t)
                if not self._send(camera, cam, t, outcome.to_payload()):
                    return
                with self._lock:
                    self._held[camera].pop(t, None)

    def _take_acks(self) -> None:
        pending, self._unverified = self._unverified, []
        while self._acks:
            pending.append(self._acks.popleft())
        for mid in pending:
            entry = self._mids.get(mid)
            if entry is None:
                continue  # not a verdict (or already taken)
            camera, t, info = entry
            if not info.is_published():  # paho marks it just after on_publish returns
                self._unverified.append(mid)
                continue
            del self._mids[mid]
            cam = self._cams[camera]
            if t > cam.mark:
                cam.acked.add(t)

    def _advance_marks(self) -> None:
        """Move each mark over the rows now all acknowledged, and store it."""
        now = time.monotonic()
        for camera, cam in self._cams.items():
            if not cam.acked:
                continue
            mark = cam.mark
            # Over rows only: an acknowledged id the log lacks moves nothing (the next trigger's
            # row comes after it), so the mark never passes a row it has not seen.
            for t, decided in cam.store.between(camera, cam.mark, max(cam.acked)):
                if t in cam.acked or (not decided and now - cam.undecided.setdefault(t, now)
                                      > STALE_PENDING_S):
                    mark = t
                    continue
                break
            if mark == cam.mark:
                continue
            cam.store.set_mark(camera, mark)
            cam.mark = mark
            cam.acked = {t for t in cam.acked if t > mark}
            cam.sent = {t for t in cam.sent if t > mark}
            cam.undecided = {t: v for t, v in cam.undecided.items() if t > mark}
            cam.scan = max(cam.scan, mark)


def trigger_id_of(outcome: Outcome) -> int | None:
    t = getattr(outcome, "trigger_id", None)
    if isinstance(t, int):
        return t
    try:
        t = json.loads(outcome.to_payload()).get("trigger_id")
    except (ValueError, AttributeError):
        return None
    return t if isinstance(t, int) else None
