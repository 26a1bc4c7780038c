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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton_edge import __version__
from lepton_edge.errors import BackendUnavailableError, ConfigError
from lepton_edge.messages import HealthMessage, health_payload
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.base import QueuedSink
from lepton_edge.sinks.mqtt_verdicts import LogDelivery, trigger_id_of

log = logging.getLogger(__name__)

DEFAULT_COUNTED = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "cat", "dog")
_TOPIC_SAFE = re.compile(r"[^A-Za-z0-9_-]")
_NO_CONN = 4  # paho.mqtt.enums.MQTTErrorCode.MQTT_ERR_NO_CONN: QoS > 0 stays queued in paho


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
        self._closing = False  # on_close is disconnecting: a disconnect is not an outage
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
        with self._lock:
            self._closing = True
        # paho's network thread may run once more between the disconnect and its stop, and
        # logs a harmless "Client is not connected" error then: not worth an ERROR line
        client.disable_logger()
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
            first = not self._auth_logged
            self._auth_logged = True
        if first:  # logged before the state says so: whoever sees the state finds the line
            log.error("%s (retrying every %d..%d s)", msg, cfg.reconnect_min, cfg.reconnect_max)
        with self._lock:
            self._connected = False
            self._state = "auth_failed" if auth else "disconnected"
            self._last_error = msg

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
            closing = self._closing
        if was and closing:
            log.info("mqtt: disconnected from %s:%d (closing)", self.config.host,
                     self.config.port)
        elif was:
            log.warning("mqtt: disconnected from %s:%d (%s); queueing outcomes until it is "
                        "back", self.config.host, self.config.port, reason)

    # ---------------------------------------------------------------- deliveries (sink thread)

    def outcome(self, outcome: Outcome) -> None:
        """Events (and verdicts of cameras without a log) take the bounded memory queue;
        verdicts of the inspection cameras are read from their log (it holds them already)."""
        kind, _, camera = outcome.topic.partition(".")
        if kind == "verdict" and self.verdicts is not None and camera in self.verdicts.cameras:
            self.verdicts.announce(camera, outcome, trigger_id_of(outcome))
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
