"""The wire format (schema v1) and the client decoder.

Every message is ZeroMQ multipart `[topic, payload]`: topic `det.<camera_id>` or `health`
(UTF-8), payload a UTF-8 JSON object with `"v": 1`. Readers ignore unknown fields; a change that
breaks readers bumps `v`. `decode()` turns a message into typed values and rejects malformed ones
with `MessageError` (never another exception), so a consumer can skip a bad message and go on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lepton_edge.detections import Detections
from lepton_edge.errors import MessageError

SCHEMA_VERSION = 1
DET_PREFIX = "det."
HEALTH_TOPIC = "health"


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in source pixels
    track_id: int | None = None  # the tracker's id where the camera tracks this class


@dataclass(frozen=True)
class DetectionMessage:
    """One processed frame of one camera. `seq` has no gaps per camera, so a reader can count
    what it missed; `ts` is the capture time (epoch seconds)."""

    camera: str
    seq: int
    frame: int
    ts: float
    width: int
    height: int
    model: str
    precision: str
    latency_ms: Mapping[str, float]
    detections: tuple[Detection, ...]
    v: int = SCHEMA_VERSION

    @property
    def topic(self) -> str:
        return DET_PREFIX + self.camera


@dataclass(frozen=True)
class CameraHealth:
    id: str
    state: str  # connecting | connected | retrying | failed | finished | stopped
    fps: float
    frames: int
    dropped: int
    reconnects: int
    published: int
    last_error: str | None = None
    skipped: int = 0  # frames the detect rate or motion gate did not infer
    # An inspection station's counters: triggers, pass, fail, error, timeout, overrun, ...
    inspection: Mapping[str, int] | None = None


@dataclass(frozen=True)
class HealthMessage:
    """Published on `health` once a second, and once more with `state: stopping` at exit."""

    ts: float
    state: str  # starting | running | stopping
    uptime_s: float
    fps: float
    subscribers: int
    cameras: tuple[CameraHealth, ...]
    # Per sink that reports one (mqtt: state, last_error, pending, ...): a broker refusing the
    # credentials shows here while the daemon keeps running.
    sinks: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    v: int = SCHEMA_VERSION


# ---------------------------------------------------------------- outcomes (event., verdict.)
# Pydantic models: they validate a payload in one call and give `lepton-edge schema` its JSON
# Schema. Encoded by the analysers' own `to_payload` (analysis/events.py, inspection/verdict.py).

Box = tuple[float, float, float, float]


class _Wire(BaseModel):
    # Readers ignore unknown fields (schema v1 grows by adding them).
    model_config = ConfigDict(extra="allow", frozen=True)


class LineCrossing(_Wire):
    line: str
    direction: Literal["in", "out"]
    ts: float


class EventMessage(_Wire):
    """Topic `event.<camera>` (MQTT: `<prefix>/<camera>/event`): one tracked object's event."""

    v: Literal[1]
    type: Literal["start", "update", "end"]
    event_id: str
    camera: str
    track_id: int
    label: str
    score: float
    top_score: float
    ts: float
    ts_start: float
    ts_end: float | None
    box: Box
    zones: list[str]
    entered_zones: list[str]
    lines_crossed: list[LineCrossing]
    snapshot: str | None
    reason: Literal["left", "timeout", "camera_lost", "stopping"] | None


class Reason(_Wire):
    code: str
    roi: str | None = None
    rule: str | None = None
    expected: Any = None
    found: Any = None


class RoiDetection(_Wire):
    label: str
    class_id: int
    score: float
    box: Box


class VerdictMessage(_Wire):
    """Topic `verdict.<camera>` (MQTT: `<prefix>/<camera>/verdict`): an inspection's result."""

    v: Literal[1]
    camera: str
    trigger_id: int
    verdict: Literal["pass", "fail", "error"]
    reasons: list[Reason]
    rois: dict[str, list[RoiDetection]]
    latency_ms: float | dict[str, float]
    part_count: int
    ts_trigger: float
    ts: float
    frame: int | None
    evidence: str | None
    result_code: int | None = None
    source: str | None = None



Message = DetectionMessage | HealthMessage | EventMessage | VerdictMessage
EVENT_PREFIX = "event."
VERDICT_PREFIX = "verdict."


# ---------------------------------------------------------------- encoding (the daemon's side)

def detections_payload(
    *, camera: str, seq: int, frame: int, ts: float, width: int, height: int, model: str,
    precision: str, latency_ms: Mapping[str, float], detections: Detections,
    labels: Sequence[str],
) -> bytes:
    """The JSON payload of one frame. Numbers are rounded (boxes to 0.1 px, scores to 1e-4) so a
    replay of the same frames gives byte-identical detections."""
    tracks = None if detections.track_id is None else detections.track_id.tolist()
    dets = []
    for i, (box, s, c) in enumerate(zip(detections.xyxy.tolist(), detections.score.tolist(),
                                        detections.class_id.tolist(), strict=True)):
        d = {"label": labels[c] if 0 <= c < len(labels) else str(c), "class_id": c,
             "score": round(s, 4), "box": [round(v, 1) for v in box]}
        if tracks is not None and tracks[i] >= 0:
            d["track_id"] = tracks[i]
        dets.append(d)
    body = {
        "v": SCHEMA_VERSION, "camera": camera, "seq": seq, "frame": frame, "ts": round(ts, 6),
        "width": width, "height": height, "model": model, "precision": precision,
        "latency_ms": {k: round(v, 2) for k, v in latency_ms.items()}, "detections": dets,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def health_payload(health: HealthMessage) -> bytes:
    body = {
        "v": SCHEMA_VERSION, "ts": round(health.ts, 6), "state": health.state,
        "uptime_s": round(health.uptime_s, 3), "fps": round(health.fps, 2),
        "subscribers": health.subscribers,
        "cameras": [
            {"id": c.id, "state": c.state, "fps": round(c.fps, 2), "frames": c.frames,
             "dropped": c.dropped, "skipped": c.skipped, "reconnects": c.reconnects,
             "published": c.published, "last_error": c.last_error,
             **({"inspection": dict(c.inspection)} if c.inspection is not None else {})}
            for c in health.cameras
        ],
    }
    if health.sinks:
        body["sinks"] = {k: dict(v) for k, v in health.sinks.items()}
    return json.dumps(body, separators=(",", ":")).encode()


# ---------------------------------------------------------------- decoding (the client's side)

def decode(topic: bytes | str, payload: bytes | str) -> Message:
    """Decode one `[topic, payload]` message. Raises MessageError saying what is wrong."""
    try:
        topic_s = topic.decode() if isinstance(topic, bytes) else topic
        text = payload.decode() if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as err:
        raise MessageError(f"message is not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as err:  # ValueError: also ints past 4300 digits
        raise MessageError(f"payload is not JSON ({str(err)[:200]})") from None
    if not isinstance(body, dict):
        raise MessageError(f"payload must be a JSON object, got {type(body).__name__}")
    v = body.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise MessageError("payload has no integer 'v' (schema version)")
    if v != SCHEMA_VERSION:
        raise MessageError(f"schema version {str(v)[:20]} is not supported (this client reads "
                           f"{SCHEMA_VERSION}); upgrade lepton-edge")
    if topic_s == HEALTH_TOPIC:
        return _decode_health(body)
    for prefix, model in ((EVENT_PREFIX, EventMessage), (VERDICT_PREFIX, VerdictMessage)):
        if topic_s.startswith(prefix) and len(topic_s) > len(prefix):
            return _decode_outcome(topic_s, prefix, model, body)
    if topic_s.startswith(DET_PREFIX) and len(topic_s) > len(DET_PREFIX):
        msg = _decode_detections(body)
        if msg.camera != topic_s[len(DET_PREFIX):]:
            raise MessageError(f"topic {topic_s[:80]!r} does not match camera "
                               f"{msg.camera[:80]!r}")
        return msg
    raise MessageError(f"unknown topic {topic_s[:80]!r} (expected 'det.<camera>', "
                       f"'event.<camera>', 'verdict.<camera>' or 'health')")


def _decode_outcome(topic: str, prefix: str, model: type[_Wire], body: Mapping[str, Any]) -> Any:
    try:
        msg = model.model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MessageError(f"{prefix}{where}: {first['msg']}") from None
    camera = getattr(msg, "camera", "")
    if camera != topic[len(prefix):]:
        raise MessageError(f"topic {topic[:80]!r} does not match camera {camera[:80]!r}")
    return msg


def _get(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in body:
        raise MessageError(f"{where}{key}: missing")
    value = body[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise MessageError(f"{where}{key}: expected {_names(kinds)}, got a boolean")
    if not isinstance(value, kinds):
        raise MessageError(f"{where}{key}: expected {_names(kinds)}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError(f"{where}{key}: must be finite, got {value}")
    if isinstance(value, int) and not isinstance(value, bool) and not _in_int64(value):
        raise MessageError(f"{where}{key}: integer out of the 64-bit range "
                           f"({len(str(abs(value)))} digits)")
    return value


def _in_int64(value: int) -> bool:
    return -(2**63) <= value < 2**63


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join({int: "integer", float: "number", str: "string", list: "list",
                        dict: "object", type(None): "null"}.get(k, k.__name__) for k in kinds)


_NUM = (int, float)


def _decode_detections(body: Mapping[str, Any]) -> DetectionMessage:
    latency = _get(body, "latency_ms", dict)
    for k in latency:
        _get(latency, k, _NUM, "latency_ms.")
    raw = _get(body, "detections", list)
    dets = []
    for i, d in enumerate(raw):
        where = f"detections[{i}]."
        if not isinstance(d, dict):
            raise MessageError(f"detections[{i}]: expected object, got {type(d).__name__}")
        box = _get(d, "box", list, where)
        if len(box) != 4:
            raise MessageError(f"{where}box: expected 4 numbers, got {len(box)} items")
        if not all(isinstance(b, _NUM) and not isinstance(b, bool)
                   and (_in_int64(b) if isinstance(b, int) else math.isfinite(b)) for b in box):
            raise MessageError(f"{where}box: expected 4 finite numbers, got {box!r:.80}")
        score = float(_get(d, "score", _NUM, where))
        if not 0.0 <= score <= 1.0:
            raise MessageError(f"{where}score: must be in 0..1, got {score}")
        track = _get(d, "track_id", (int, type(None)), where) if "track_id" in d else None
        dets.append(Detection(label=_get(d, "label", str, where),
                              class_id=_get(d, "class_id", int, where), score=score,
                              box=tuple(float(b) for b in box),  # type: ignore[arg-type]
                              track_id=track))
    seq = _get(body, "seq", int)
    if seq < 0:
        raise MessageError(f"seq: must be >= 0, got {seq}")
    return DetectionMessage(
        camera=_get(body, "camera", str), seq=seq, frame=_get(body, "frame", int),
        ts=float(_get(body, "ts", _NUM)), width=_get(body, "width", int),
        height=_get(body, "height", int), model=_get(body, "model", str),
        precision=_get(body, "precision", str),
        latency_ms={k: float(v) for k, v in latency.items()}, detections=tuple(dets),
    )


def _decode_health(body: Mapping[str, Any]) -> HealthMessage:
    cams = []
    for i, c in enumerate(_get(body, "cameras", list)):
        where = f"cameras[{i}]."
        if not isinstance(c, dict):
            raise MessageError(f"cameras[{i}]: expected object, got {type(c).__name__}")
        cams.append(CameraHealth(
            id=_get(c, "id", str, where), state=_get(c, "state", str, where),
            fps=float(_get(c, "fps", _NUM, where)), frames=_get(c, "frames", int, where),
            dropped=_get(c, "dropped", int, where), reconnects=_get(c, "reconnects", int, where),
            published=_get(c, "published", int, where),
            last_error=_get(c, "last_error", (str, type(None)), where),
            skipped=_get(c, "skipped", int, where) if "skipped" in c else 0,
            inspection=_get(c, "inspection", dict, where) if "inspection" in c else None,
        ))
    return HealthMessage(
        ts=float(_get(body, "ts", _NUM)), state=_get(body, "state", str),
        uptime_s=float(_get(body, "uptime_s", _NUM)), fps=float(_get(body, "fps", _NUM)),
        subscribers=_get(body, "subscribers", int), cameras=tuple(cams),
        sinks=_get(body, "sinks", dict) if "sinks" in body else {},
    )
