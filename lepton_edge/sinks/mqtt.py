"""The MQTT bridge: events, verdicts, per-camera counts, camera states and Home Assistant
discovery, on a broker people already run (Home Assistant, Node-RED).

Topics, under `prefix` (default `lepton-edge`):

- `<prefix>/status`: `online` / `offline`, retained; `offline` is the broker's last will.
- `<prefix>/<camera>/event`, `<prefix>/<camera>/verdict`: the outcome payloads (schema v1 JSON),
  at `qos`, never retained. Events wait in this sink's bounded memory queue while the broker is
  down and go out after the reconnect, in order (they are in no durable log: an outage longer
  than `queue` events, or a restart, loses the overflow, logged at ERROR). Verdicts of the
  inspection cameras (`verdict_logs`) are delivered from their durable verdict log instead (see
  `LogDelivery`): after an outage or a daemon restart every verdict the broker did not
  acknowledge goes out, in trigger order, before newer ones; at-least-once (QoS 1 may repeat
  what was in flight at a kill). Verdicts of other cameras take the memory queue.
- `<prefix>/<camera>/count/<label>`: tracked objects of that class now in view (distinct
  `track_id >= 0`, or detections when the camera is not tracked), retained, on change only.
- `<prefix>/<camera>/zone/<zone>`: `ON` / `OFF`, retained: some open event is in the zone.
- `<prefix>/<camera>/state`: the camera's state from the health message, retained.
- `<prefix>/health`: the health payload, QoS 0, not retained.
- `homeassistant/sensor/<node>/<camera>_<label>_count/config`,
  `homeassistant/binary_sensor/<node>/<camera>_<zone>_occupancy/config`,
  `homeassistant/sensor/<node>/<camera>_state/config`: MQTT discovery, retained, sent at each
  connect (and when a camera or zone first appears), so the box shows up in Home Assistant.

Per-frame data is never queued: `frame` keeps the newest frame per camera, its counts are
taken every `count_interval` seconds (published when they change), and the retained counts are
re-sent at each connect. A refused login (wrong credentials) is logged once at ERROR with what
to fix, `state` becomes `auth_failed` and `last_error` says why; the sink keeps retrying with
backoff and keeps queueing outcomes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton_edge import __version__
from lepton_edge.errors import BackendUnavailableError, ConfigError
from lepton_edge.messages import HealthMessage, health_payload
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.base import QueuedSink
from lepton_edge.sinks.verdict_log import DeliveryMarks

log = logging.getLogger(__name__)

DEFAULT_COUNTED = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "cat", "dog")
_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_NO_CONN = 4  # paho.mqtt.enums.MQTTErrorCode.MQTT_ERR_NO_CONN: QoS > 0 stays queued in paho
STALE_PENDING_S = 300.0  # a trigger seen undecided this long no longer holds a mark back
_WINDOW = 1000  # verdicts in flight at most (room in paho's queue for the rest)
_PAGE = 256  # verdicts read from the log at a time
_RECENT = 4096  # trigger ids per camera remembered as sent, to skip their live copy


class MqttTls(BaseModel):
    """TLS to the broker: a CA bundle to verify it, and a client certificate and key if the
    broker asks for one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate needs "
                             "its key)")
        return self


class MqttConfig(BaseModel):
    """`mqtt:` in the config."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=64,
                                    pattern=r"^[A-Za-z0-9_.-]+$")] = "lepton-edge"
    username: str | None = None
    # A file holding the password (first line); never the password itself in the config.
    password_file: str | None = None
    tls: MqttTls | None = None
    prefix: Annotated[str, Field(min_length=1, pattern=r"^[^#+]+$")] = "lepton-edge"
    qos: Literal[0, 1, 2] = 1
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min: Annotated[int, Field(ge=1, le=60)] = 1
    reconnect_max: Annotated[int, Field(ge=1, le=3600)] = 30
    discovery: bool = True
    discovery_prefix: Annotated[str, Field(min_length=1)] = "homeassistant"
    # Classes that get a count topic and a Home Assistant sensor per camera.
    count_classes: tuple[str, ...] = DEFAULT_COUNTED
    # Events held in memory while the broker is down; past it they are logged at ERROR instead.
    # Also paho's window of messages not yet acknowledged. Verdicts of inspection cameras wait
    # in their durable log instead (any number), and are read from it.
    queue: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    # How often the newest frame's counts are looked at (published only when they change).
    count_interval: Annotated[float, Field(gt=0, le=60)] = 0.5

    @model_validator(mode="after")
    def _checks(self) -> MqttConfig:
        if self.reconnect_max < self.reconnect_min:
            raise ValueError(f"reconnect_max ({self.reconnect_max}) must be >= reconnect_min "
                             f"({self.reconnect_min})")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        return self


def track_counts(result: FrameResult, classes: Sequence[str]) -> dict[str, int]:
    """Objects per class in this frame, for `classes`: distinct track ids >= 0 when the frame is
    tracked, else one per detection."""
    dets = result.detections
    counts = dict.fromkeys(classes, 0)
    if dets.track_id is None:
        seen = Counter(result.label(c) for c in dets.class_id.tolist())
    else:
        pairs = {(result.label(c), t) for c, t in
                 zip(dets.class_id.tolist(), dets.track_id.tolist(), strict=True) if t >= 0}
        seen = Counter(label for label, _ in pairs)
    for label, n in seen.items():
        if label in counts:
            counts[label] = n
    return counts


def _slug(text: str) -> str:
    return _TOPIC_SAFE.sub("_", text)


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


def _trigger_id(outcome: Outcome) -> int | None:
    t = getattr(outcome, "trigger_id", None)
    if isinstance(t, int):
        return t
    try:
        t = json.loads(outcome.to_payload()).get("trigger_id")
    except (ValueError, AttributeError):
        return None
    return t if isinstance(t, int) else None


class MqttSink(QueuedSink):
    """The bridge. `cameras`: the configured camera ids (discovery is sent for them at the first
    connect; others are added when they appear); `zones`: camera id -> its zone ids (a binary
    sensor each; zones first seen in an event are added too). `resolve` turns the config's file
    paths into paths (the daemon passes `Config.resolve`). `verdict_logs`: inspection camera id
    -> its verdict log file (`<state_dir>/<inspect.log.path>`); their verdicts are delivered
    from that log (`LogDelivery`), not from the memory queue, which holds the events.

    `state`: `connecting`, `connected`, `disconnected`, `auth_failed` or `closed`;
    `last_error`: why the last connection failed or ended, or None."""

    name = "mqtt"

    def __init__(self, config: MqttConfig, *, cameras: Sequence[str] = (),
                 zones: Mapping[str, Sequence[str]] | None = None,
                 resolve: Callable[[str], Path] = Path,
                 verdict_logs: Mapping[str, Path] | None = None) -> None:
        super().__init__(frame_queue=2, outcome_queue=config.queue)
        self.config = config
        self._resolve = resolve
        self._node = _slug(config.client_id)
        self._lock = threading.Lock()
        self._connected = False
        self._state = "connecting"
        self._last_error: str | None = None
        self._auth_logged = False
        self._cameras: dict[str, set[str]] = {c: set((zones or {}).get(c, ())) for c in cameras}
        for cam, zs in (zones or {}).items():
            self._cameras.setdefault(cam, set()).update(zs)
        self._counts: dict[str, dict[str, int]] = {}
        self._cam_state: dict[str, str] = {}
        self._open_events: dict[str, dict[str, set[str]]] = {}  # camera -> event id -> zones
        self._occupied: dict[tuple[str, str], bool] = {}
        self._client: Any = None
        self._newest: dict[str, FrameResult] = {}  # camera -> newest frame, for the counts
        self._counted: dict[str, int] = {}  # camera -> seq counted last
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        self.published = 0
        self.verdicts: LogDelivery | None = None
        if verdict_logs:
            self.verdicts = LogDelivery(verdict_logs, f"mqtt:{config.client_id}",
                                        publish=self._publish_verdict,
                                        connected=lambda: self.connected, qos=config.qos,
                                        held=config.queue)

    # ---------------------------------------------------------------- status for the lead

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def last_error(self) -> str | None:
        with self._lock:
            return self._last_error

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    def status(self) -> dict[str, Any]:
        """For the health message: state, last_error, outcomes waiting and lost."""
        lost = self.outcomes_lost + (self.verdicts.lost if self.verdicts is not None else 0)
        return {"state": self.state, "last_error": self.last_error,
                "pending": self.pending_outcomes, "lost": lost, "published": self.published}

    def topic(self, *parts: str) -> str:
        return "/".join((self.config.prefix, *parts))

    # ---------------------------------------------------------------- lifecycle

    def on_open(self) -> None:
        self._client = self._make_client()
        cfg = self.config
        if self.verdicts is not None:
            self.verdicts.open()  # the marks, before the first connect reads the log
        self._client.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive)
        self._client.loop_start()  # paho's network thread; it reconnects with the backoff
        self._ticker = threading.Thread(target=self._count_loop, name="sink-mqtt-counts",
                                        daemon=True)
        self._ticker.start()
        log.info("mqtt: connecting to %s:%d as %s (topics under %s/)", cfg.host, cfg.port,
                 cfg.client_id, cfg.prefix)

    def on_close(self) -> None:
        self._ticker_stop.set()
        if self._ticker is not None:
            self._ticker.join(5)
        if self.verdicts is not None:
            self.verdicts.close(timeout=3.0)
        client, self._client = self._client, None
        if client is None:
            return
        if self.connected:
            try:
                client.publish(self.topic("status"), "offline", qos=1,
                               retain=True).wait_for_publish(2)
            except (RuntimeError, ValueError) as err:  # the link dropped meanwhile
                log.warning("mqtt: could not publish offline at close (%s); the broker's "
                            "last will says it", err)
        client.disconnect()
        client.loop_stop()
        with self._lock:
            self._state, self._connected = "closed", False

    def _make_client(self) -> Any:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as err:
            raise BackendUnavailableError(
                "mqtt: needs paho-mqtt 2.x; install the extra: pip install 'lepton-edge[mqtt]'"
            ) from err
        cfg = self.config
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cfg.client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.enable_logger(logging.getLogger(__name__ + ".paho"))
        client.max_queued_messages_set(cfg.queue)
        client.reconnect_delay_set(cfg.reconnect_min, cfg.reconnect_max)
        client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, self._password())
        if cfg.tls is not None:
            self._set_tls(client, cfg.tls)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _password(self) -> str | None:
        if self.config.password_file is None:
            return None
        path = self._resolve(self.config.password_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise ConfigError(f"mqtt.password_file: cannot read {path} ({err.strerror}); write "
                              f"the broker password on its first line") from err
        return lines[0].strip() if lines else ""

    def _set_tls(self, client: Any, tls: MqttTls) -> None:
        paths = {k: str(self._resolve(v)) if v else None for k, v in
                 (("ca_certs", tls.ca_file), ("certfile", tls.cert_file),
                  ("keyfile", tls.key_file))}
        for key, path in paths.items():
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"mqtt.tls: {key} {path} does not exist")
        try:
            client.tls_set(**paths)
        except (OSError, ValueError) as err:
            raise ConfigError(f"mqtt.tls: cannot load the certificates ({err})") from err

    # ---------------------------------------------------------------- paho's callbacks

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any,
                    _props: Any) -> None:
        cfg = self.config
        if reason.is_failure:
            self._connect_failed(reason)
            return
        with self._lock:
            if self._state == "auth_failed":
                log.info("mqtt: %s:%d accepted the login now", cfg.host, cfg.port)
            self._connected, self._state, self._last_error = True, "connected", None
            self._auth_logged = False
        log.info("mqtt: connected to %s:%d", cfg.host, cfg.port)
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        self._publish_retained(client)
        if self.verdicts is not None:
            self.verdicts.connected()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, _reason: Any,
                    _props: Any) -> None:
        """PUBACK / PUBCOMP (QoS 1 / 2), or written to the socket (QoS 0)."""
        if self.verdicts is not None:
            self.verdicts.acked(mid)

    def _connect_failed(self, reason: Any) -> None:
        cfg = self.config
        code = getattr(reason, "value", reason)
        auth = code in (4, 5, 0x86, 0x87)  # v3.1.1 bad credentials / not authorized; v5 same
        msg = (f"mqtt: broker {cfg.host}:{cfg.port} refused the connection: {reason}"
               + ("; check mqtt.username and mqtt.password_file" if auth else ""))
        with self._lock:
            self._connected = False
            self._state = "auth_failed" if auth else "disconnected"
            self._last_error = msg
            first = not self._auth_logged
            self._auth_logged = True
        if first:
            log.error("%s (retrying every %d..%d s)", msg, cfg.reconnect_min, cfg.reconnect_max)

    def _on_connect_fail(self, _client: Any, _userdata: Any) -> None:
        """No CONNACK at all: refused, unreachable, or the TLS handshake failed."""
        cfg = self.config
        msg = (f"mqtt: cannot connect to {cfg.host}:{cfg.port} (refused, unreachable"
               + (", or the TLS handshake failed: check mqtt.tls" if cfg.tls else "") + ")")
        with self._lock:
            first = self._last_error != msg
            self._connected = False
            if self._state != "auth_failed":
                self._state, self._last_error = "disconnected", msg
        if first:
            log.warning("%s; retrying every %d..%d s", msg, cfg.reconnect_min, cfg.reconnect_max)

    def _on_disconnect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any,
                       _props: Any) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            if self._state != "auth_failed" and self._state != "closed":
                self._state = "disconnected"
                if reason.is_failure:
                    self._last_error = f"mqtt: lost the broker ({reason})"
        if was:
            log.warning("mqtt: disconnected from %s:%d (%s); queueing outcomes until it is "
                        "back", self.config.host, self.config.port, reason)

    # ---------------------------------------------------------------- deliveries (sink thread)

    def outcome(self, outcome: Outcome) -> None:
        """Events (and verdicts of cameras without a log) take the bounded memory queue;
        verdicts of the inspection cameras are read from their log (it holds them already)."""
        kind, _, camera = outcome.topic.partition(".")
        if kind == "verdict" and self.verdicts is not None and camera in self.verdicts.cameras:
            self.verdicts.announce(camera, outcome, _trigger_id(outcome))
            return
        super().outcome(outcome)

    def _publish_verdict(self, camera: str, payload: bytes) -> Any | None:
        """The delivery thread's publish: paho's message info, or None when not accepted."""
        client = self._client
        if client is None or not self.connected:
            return None
        info = client.publish(self.topic(_slug(camera), "verdict"), payload, qos=self.config.qos)
        if not (info.rc == 0 or (info.rc == _NO_CONN and self.config.qos > 0)):
            return None  # paho's own queue is full, or QoS 0 on a link that just dropped
        with self._lock:
            self.published += 1
        return info

    def deliver_outcome(self, outcome: Outcome) -> bool:
        client = self._client
        if client is None or not self.connected:
            return False  # stays at the head of the queue; retried in order
        kind, _, camera = outcome.topic.partition(".")
        payload = outcome.to_payload()
        info = client.publish(self.topic(_slug(camera), kind), payload, qos=self.config.qos)
        kept = info.rc == 0 or (info.rc == _NO_CONN and self.config.qos > 0)
        if not kept:
            return False  # QoS 0 on a link that just dropped, or paho's own queue is full
        # Accepted: paho now holds it (QoS 1/2 also across a reconnect): never handed twice.
        with self._lock:
            self.published += 1
        if kind == "event":
            self._track_zones(client, camera, payload)
        return True

    def frame(self, result: FrameResult, payload: bytes) -> None:
        """Keeps the camera's newest frame (one dict store, no lock: the feeding thread never
        waits on this sink); its counts are taken every `count_interval` seconds."""
        self._newest[result.camera] = result

    def _count_loop(self) -> None:
        while not self._ticker_stop.wait(self.config.count_interval):
            for camera, result in list(self._newest.items()):
                if self._counted.get(camera) == result.seq:
                    continue
                self._counted[camera] = result.seq
                try:
                    self._publish_counts(result)
                except Exception:
                    self.failures += 1
                    log.exception("mqtt: publishing the counts of %s failed", camera)

    def _publish_counts(self, result: FrameResult) -> None:
        counts = track_counts(result, self.config.count_classes)
        client = self._client
        with self._lock:
            new_camera = result.camera not in self._cameras
            self._cameras.setdefault(result.camera, set())
            old = self._counts.get(result.camera)
            self._counts[result.camera] = counts
            connected = self._connected
        if not connected or client is None:
            return  # the newest counts go out at the next connect; nothing is queued
        if new_camera:
            self._discover_camera(client, result.camera)
        for label, n in counts.items():
            if old is None or old.get(label) != n:
                client.publish(self.topic(_slug(result.camera), "count", _slug(label)), str(n),
                               qos=self.config.qos, retain=True)

    def deliver_health(self, health: HealthMessage) -> None:
        client = self._client
        changed = []
        with self._lock:
            for cam in health.cameras:
                if cam.id not in self._cameras:
                    self._cameras[cam.id] = set()
                    changed.append((cam.id, True))
                if self._cam_state.get(cam.id) != cam.state:
                    self._cam_state[cam.id] = cam.state
                    changed.append((cam.id, False))
            connected = self._connected
        if not connected or client is None:
            return
        for cam_id, new in changed:
            if new:
                self._discover_camera(client, cam_id)
            else:
                client.publish(self.topic(_slug(cam_id), "state"), self._cam_state[cam_id],
                               qos=self.config.qos, retain=True)
        client.publish(self.topic("health"), health_payload(health), qos=0)

    # ---------------------------------------------------------------- zones

    def _track_zones(self, client: Any, camera: str, payload: bytes) -> None:
        try:
            event = json.loads(payload)
            event_id, kind = str(event["event_id"]), event["type"]
            zones = {str(z) for z in event.get("zones") or ()}
        except (ValueError, KeyError, TypeError):
            log.warning("mqtt: event on %s without event_id/type/zones; zones not updated",
                        camera)
            return
        with self._lock:
            open_events = self._open_events.setdefault(camera, {})
            if kind == "end":
                open_events.pop(event_id, None)
            else:
                open_events[event_id] = zones
            known = self._cameras.setdefault(camera, set())
            fresh = zones - known
            known |= zones
            now = {z: any(z in zs for zs in open_events.values()) for z in known}
            flips = {z: on for z, on in now.items() if self._occupied.get((camera, z)) != on}
            for z, on in flips.items():
                self._occupied[(camera, z)] = on
        for z in sorted(fresh):
            self._discover_zone(client, camera, z)
        for z, on in flips.items():
            client.publish(self.topic(_slug(camera), "zone", _slug(z)), "ON" if on else "OFF",
                           qos=self.config.qos, retain=True)

    # ---------------------------------------------------------------- retained state, discovery

    def _publish_retained(self, client: Any) -> None:
        """At each connect: discovery, then the newest counts, states and zone occupancy."""
        with self._lock:
            cameras = {c: sorted(z) for c, z in self._cameras.items()}
            counts = {c: dict(v) for c, v in self._counts.items()}
            states = dict(self._cam_state)
            occupied = dict(self._occupied)
        qos = self.config.qos
        for cam, zones in cameras.items():
            self._discover_camera(client, cam, zones)
            c = _slug(cam)
            for label in self.config.count_classes:
                n = counts.get(cam, {}).get(label, 0)
                client.publish(self.topic(c, "count", _slug(label)), str(n), qos=qos,
                               retain=True)
            if cam in states:
                client.publish(self.topic(c, "state"), states[cam], qos=qos, retain=True)
            for z in zones:
                on = occupied.get((cam, z), False)
                client.publish(self.topic(c, "zone", _slug(z)), "ON" if on else "OFF", qos=qos,
                               retain=True)

    def _discover_camera(self, client: Any, camera: str, zones: Sequence[str] = ()) -> None:
        if not self.config.discovery:
            return
        c = _slug(camera)
        for label in self.config.count_classes:
            self._announce(client, "sensor", f"{c}_{_slug(label)}_count", camera, {
                "name": f"{label} count", "state_topic": self.topic(c, "count", _slug(label)),
                "unit_of_measurement": "objects", "state_class": "measurement",
                "icon": "mdi:counter",
            })
        self._announce(client, "sensor", f"{c}_state", camera, {
            "name": "camera state", "state_topic": self.topic(c, "state"), "icon": "mdi:cctv",
            "entity_category": "diagnostic",
        })
        for z in zones:
            self._discover_zone(client, camera, z)

    def _discover_zone(self, client: Any, camera: str, zone: str) -> None:
        if not self.config.discovery:
            return
        c = _slug(camera)
        self._announce(client, "binary_sensor", f"{c}_{_slug(zone)}_occupancy", camera, {
            "name": f"{zone} occupancy", "state_topic": self.topic(c, "zone", _slug(zone)),
            "device_class": "occupancy", "payload_on": "ON", "payload_off": "OFF",
        })

    def _announce(self, client: Any, component: str, object_id: str, camera: str,
                  fields: dict[str, Any]) -> None:
        """One discovery config, in the format of Home Assistant's MQTT discovery:
        `<discovery_prefix>/<component>/<node_id>/<object_id>/config`, retained."""
        body = {
            **fields,
            "unique_id": f"{self._node}_{object_id}",
            "object_id": f"{self._node}_{object_id}",
            "availability_topic": self.topic("status"),
            "payload_available": "online", "payload_not_available": "offline",
            "device": {
                "identifiers": [f"{self._node}_{_slug(camera)}"],
                "name": f"{self.config.client_id} {camera}",
                "manufacturer": "lepton-edge", "model": "camera", "sw_version": __version__,
            },
            "origin": {"name": "lepton-edge", "sw_version": __version__},
        }
        topic = f"{self.config.discovery_prefix}/{component}/{self._node}/{object_id}/config"
        client.publish(topic, json.dumps(body, separators=(",", ":")), qos=1, retain=True)
