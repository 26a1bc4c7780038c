from __future__ import annotations

import json
import re

import numpy as np
import pytest

from lepton_edge.detections import Detections
from lepton_edge.errors import MessageError
from lepton_edge.messages import (
    CameraHealth,
    DetectionMessage,
    HealthMessage,
    decode,
    detections_payload,
    health_payload,
)


def payload(**over) -> bytes:
    dets = Detections(np.array([[1.04, 2.0, 30.0, 40.0]], np.float32),
                      np.array([0.912345], np.float32), np.array([0], np.int32))
    fields = dict(camera="gate-1", seq=3, frame=7, ts=1764412800.1234567, width=768, height=576,
                  model="yolov8n", precision="int8", latency_ms={"infer": 19.81},
                  detections=dets, labels=("person",))
    fields.update(over)
    return detections_payload(**fields)


def test_round_trip() -> None:
    msg = decode(b"det.gate-1", payload())
    assert isinstance(msg, DetectionMessage)
    assert (msg.camera, msg.seq, msg.frame, msg.width, msg.height) == ("gate-1", 3, 7, 768, 576)
    assert msg.detections[0].label == "person" and msg.detections[0].score == 0.9123
    assert msg.detections[0].box == (1.0, 2.0, 30.0, 40.0)
    assert msg.topic == "det.gate-1" and msg.latency_ms == {"infer": 19.81}


def test_payload_is_deterministic() -> None:
    assert payload() == payload()


def test_health_round_trip() -> None:
    h = HealthMessage(ts=1.5, state="running", uptime_s=2.0, fps=9.5, subscribers=1,
                      cameras=(CameraHealth("a", "retrying", 0.0, 10, 2, 1, 10, "lost"),))
    got = decode("health", health_payload(h))
    assert got == h


def body(**over) -> bytes:
    b = json.loads(payload())
    for k, v in over.items():
        if v is ...:
            b.pop(k)
        else:
            b[k] = v
    return json.dumps(b).encode()


@pytest.mark.parametrize(("topic", "data", "error"), [
    (b"det.gate-1", b"\xff\xfe", "not UTF-8"),
    (b"det.gate-1", b"{not json", "not JSON"),
    (b"det.gate-1", b"[1, 2]", "must be a JSON object, got list"),
    (b"det.gate-1", body(v=...), "no integer 'v'"),
    (b"det.gate-1", body(v=2), "schema version 2 is not supported"),
    (b"det.gate-1", body(seq="3"), "seq: expected integer, got str"),
    (b"det.gate-1", body(seq=-1), "seq: must be >= 0"),
    (b"det.gate-1", body(ts=True), "ts: expected integer or number, got a boolean"),
    (b"det.gate-1", body(camera=...), "camera: missing"),
    (b"det.gate-1", body(detections={}), "detections: expected list, got dict"),
    (b"det.gate-1", body(detections=[1]), "detections[0]: expected object, got int"),
    (b"det.gate-1", body(detections=[{"label": "p", "class_id": 0, "score": 2, "box": [0] * 4}]),
     "detections[0].score: must be in 0..1"),
    (b"det.gate-1", body(detections=[{"label": "p", "class_id": 0, "score": 1, "box": [0] * 3}]),
     "detections[0].box: expected 4 numbers, got 3 items"),
    (b"det.gate-1", body(detections=[{"label": "p", "class_id": 0, "score": 1,
                                      "box": [0, 0, "x", 0]}]),
     "detections[0].box: expected 4 finite numbers"),
    (b"det.gate-1", body(latency_ms={"infer": "fast"}), "latency_ms.infer: expected"),
    (b"det.other", payload(), "does not match camera 'gate-1'"),
    (b"weather", payload(), "unknown topic 'weather'"),
    (b"health", b'{"v": 1, "ts": 1, "cameras": []}', "state: missing"),
])
def test_malformed_messages_raise_message_error(topic, data, error) -> None:
    with pytest.raises(MessageError, match=re.escape(error)):
        decode(topic, data)


def test_unknown_fields_are_ignored() -> None:
    msg = decode(b"det.gate-1", body(extra={"new": 1}))
    assert isinstance(msg, DetectionMessage)
