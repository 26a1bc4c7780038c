"""Malformed payloads into the client decoder: a clear MessageError, never another exception.

Fuzzed with hypothesis at three levels: raw bytes, valid payloads with one field replaced by any
JSON value, and valid payloads with bytes flipped or cut. Then over a real ZeroMQ socket: the
Subscriber skips what it cannot decode, counts it, and goes on with the next good message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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
from lepton_edge.subscribe import Subscriber
from tests.conftest import free_port

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def valid_detection_body() -> dict[str, Any]:
    dets = Detections(xyxy=np.array([[10.0, 20.0, 110.0, 220.0]], np.float32),
                      score=np.array([0.9], np.float32), class_id=np.array([0], np.int64))
    payload = detections_payload(
        camera="gate-1", seq=7, frame=7, ts=1764412800.5, width=768, height=576,
        model="yolov8n", precision="int8", latency_ms={"infer": 19.8}, detections=dets,
        labels=("person",))
    return json.loads(payload)


def valid_health_body() -> dict[str, Any]:
    cam = CameraHealth(id="gate-1", state="retrying", fps=9.5, frames=10, dropped=1,
                       reconnects=2, published=9, last_error="stalled")
    return json.loads(health_payload(HealthMessage(ts=1.0, state="running", uptime_s=3.0,
                                                   fps=9.5, subscribers=1, cameras=(cam,))))


def check(topic: bytes | str, payload: bytes | str) -> None:
    """decode() returns a typed message or raises MessageError with a message; nothing else."""
    try:
        msg = decode(topic, payload)
    except MessageError as err:
        assert str(err), "a MessageError must say what is wrong"
        assert len(str(err)) < 400, f"error message too long to log: {str(err)[:100]}..."
        return
    assert isinstance(msg, DetectionMessage | HealthMessage)


# Values that have broken JSON decoders: huge integers (no float for them, and Python limits
# int parsing to 4300 digits), non-finite floats, deep nesting, wrong types.
EDGE_VALUES = st.sampled_from([
    10**400, -(10**400), 2**63, -1, float("nan"), float("inf"), float("-inf"), 1e308, True,
    None, "", "\x00", [], {}, [[[[[]]]]], [1, 2, 3, 4], [1e400, 0, 0, 0],
])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | EDGE_VALUES,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def replace_at(body: Any, path: list[int], value: Any) -> Any:
    """`body` with the node chosen by `path` (indices into keys/items, wrapped) set to
    `value`."""
    if not path or not isinstance(body, dict | list) or not body:
        return value
    if isinstance(body, dict):
        key = list(body)[path[0] % len(body)]
        return {**body, key: replace_at(body[key], path[1:], value)}
    i = path[0] % len(body)
    return [*body[:i], replace_at(body[i], path[1:], value), *body[i + 1:]]


@FUZZ
@given(topic=st.binary(max_size=40), payload=st.binary(max_size=400))
@example(topic=b"health", payload=b"\xff\xfe")
@example(topic=b"det.a", payload=b"[" * 100_000)
@example(topic=b"det.a", payload=b'{"v": ' + b"1" * 5000 + b"}")
def test_random_bytes(topic: bytes, payload: bytes) -> None:
    check(topic, payload)


@FUZZ
@given(which=st.sampled_from(["det", "health"]),
       path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=JSON)
@example(which="det", path=[4], value=10**400)  # ts
@example(which="det", path=[10, 0, 2], value=10**400)  # detections[0].score
@example(which="det", path=[10, 0, 3, 0], value=10**400)  # detections[0].box[0]
@example(which="det", path=[9, 0], value=10**400)  # latency_ms.infer
@example(which="health", path=[1], value=10**400)  # ts
@example(which="health", path=[6, 0, 2], value=-(10**400))  # cameras[0].fps
def test_valid_payload_with_one_field_replaced(which: str, path: list[int], value: Any) -> None:
    body = valid_detection_body() if which == "det" else valid_health_body()
    topic = "det.gate-1" if which == "det" else "health"
    check(topic, json.dumps(replace_at(body, path, value)))


@FUZZ
@given(cut=st.integers(0, 2000), flips=st.lists(st.tuples(st.integers(0, 2000),
                                                          st.integers(0, 255)), max_size=4))
def test_valid_payload_with_bytes_flipped_or_cut(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(json.dumps(valid_detection_body()).encode())
    for pos, byte in flips:
        data[pos % len(data)] = byte
    check(b"det.gate-1", bytes(data[:cut] if cut < len(data) else data))


def test_the_valid_payloads_decode() -> None:
    """The fuzzers start from payloads that are valid, so every failure they find is real."""
    det = decode("det.gate-1", json.dumps(valid_detection_body()))
    assert isinstance(det, DetectionMessage) and det.detections[0].label == "person"
    health = decode("health", json.dumps(valid_health_body()))
    assert isinstance(health, HealthMessage) and health.cameras[0].state == "retrying"


@pytest.mark.parametrize(("topic", "payload", "expected"), [
    (b"det.a", b"\xff", "not UTF-8"),
    (b"det.a", b"{", "not JSON"),
    (b"det.a", b"[]", "must be a JSON object"),
    (b"det.a", b'{"v": 2}', "schema version 2 is not supported"),
    (b"telemetry", b'{"v": 1}', "unknown topic"),
    (b"det.a", b'{"v": 1, "latency_ms": {}, "detections": [{"box": [1, 2]}]}', "box"),
    (b"det.gate-1", json.dumps(replace_at(valid_detection_body(), [4], 10**400)).encode(),
     "^ts: "),
])
def test_errors_say_what_is_wrong(topic: bytes, payload: bytes, expected: str) -> None:
    with pytest.raises(MessageError, match=expected):
        decode(topic, payload)


def test_subscriber_skips_malformed_messages_over_zeromq() -> None:
    """A stranger publishing garbage on the endpoint: the Subscriber counts and skips it."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pub.bind(endpoint)
    good = json.dumps(valid_detection_body()).encode()
    bad: list[list[bytes]] = [
        [b"det.gate-1"],  # one frame
        [b"det.gate-1", good, b"extra"],  # three frames
        [b"det.gate-1", b"\x00" * 64],
        [b"det.gate-1", b'{"v": 1, "ts": ' + str(10**400).encode() + b"}"],
        [b"health", b'{"v": 1, "cameras": "none"}'],
        [b"det.gate-1", b"[" * 100_000],
    ]
    try:
        with Subscriber(endpoint, context=ctx) as sub:
            deadline = time.monotonic() + 10
            while True:  # PUB drops until the subscription arrives: send a probe until seen
                pub.send_multipart([b"det.gate-1", good])
                if sub.receive(timeout=0.1) is not None:
                    break
                assert time.monotonic() < deadline, "subscriber never connected"
            for parts in bad:
                pub.send_multipart(parts)
            pub.send_multipart([b"det.gate-1", good])
            msg = sub.receive(timeout=5)
            assert isinstance(msg, DetectionMessage) and msg.camera == "gate-1"
            assert sub.invalid == len(bad)
    finally:
        pub.close(0)
        ctx.term()
