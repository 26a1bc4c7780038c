"""The HTTP API on a real aiohttp server on 127.0.0.1, fed real frames of vtest.avi with their
real detections; the DeepStack endpoint runs the bundled model on ONNX Runtime."""

from __future__ import annotations

import socket
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="needs aiohttp (pip install 'lepton-edge[http]')")

from lepton_edge.errors import ConfigError
from lepton_edge.messages import CameraHealth, HealthMessage
from lepton_edge.pipeline.nms import box_iou
from lepton_edge.sinks.http import HttpConfig, HttpSink, Overlay
from tests.conftest import IMAGES
from tests.sinks.conftest import event, events_from
from tests.sinks.http.conftest import MjpegViewer, get, get_json, post_form

OVERLAY = Overlay(zones={"door": [(100, 300), (300, 300), (300, 560), (100, 560)]},
                  lines={"gate": [(400, 100), (700, 500)]})


@pytest.fixture
def served(detector, labels, tmp_path):
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    flags = {"healthy": True}

    def snapshot_path(name: str):
        p = snaps / name
        return p if p.is_file() else None

    sink = HttpSink(HttpConfig(port=0, mjpeg_fps=10, mjpeg_width=320),
                    overlays={"plaza": OVERLAY}, healthy=lambda: flags["healthy"],
                    detect=detector, labels=labels, snapshot_path=snapshot_path)
    sink.open()
    yield sink, flags, snaps
    sink.close()


def _health(state: str = "connected") -> HealthMessage:
    return HealthMessage(ts=time.time(), state="running", uptime_s=12.0, fps=9.8, subscribers=1,
                         cameras=(CameraHealth("plaza", state, 9.8, 24, 0, 0, 24),))


def test_healthz_follows_the_pipeline(served) -> None:
    sink, flags, _ = served
    assert get(sink.url + "/healthz")[0] == 200
    flags["healthy"] = False
    status, body = get_json(sink.url + "/healthz")
    assert (status, body["status"]) == (503, "wedged")


def test_cameras_latest_and_events(served, vtest_results) -> None:
    sink, _, snaps = served
    assert get(sink.url + "/api/cameras/plaza/latest.jpg")[0] == 404  # no frame yet
    sink.health(_health())
    for r in vtest_results[:5]:
        sink.frame(r, b"")
    status, body = get_json(sink.url + "/api/cameras")
    (cam,) = body["cameras"]
    assert (cam["id"], cam["state"], cam["seq"], cam["width"]) == ("plaza", "connected", 4, 768)
    assert cam["zones"]["door"][0] == [100, 300]
    status, jpg, headers = get(sink.url + "/api/cameras/plaza/latest.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == vtest_results[4].image.shape
    # The drawing is there: the zone's amber edge and differences where the boxes are.
    assert np.abs(img.astype(int) - vtest_results[4].image).mean() > 1.0
    b, g, r = img[300, 200].tolist()
    assert r > 180 and g > 120 and b < 90, f"zone edge at (200, 300) is {b, g, r}"

    (snaps / "plaza-1.jpg").write_bytes(jpg)
    sink.outcome(event("plaza", 1, kind="start", snapshot="plaza-1.jpg", zones=["door"]))
    sink.outcome(event("plaza", 1, kind="update"))
    sink.outcome(event("plaza", 2, kind="start", snapshot="../../etc/passwd"))
    for e in events_from(vtest_results[4], vtest_results[4].label)[:3]:
        sink.outcome(e)
    status, body = get_json(sink.url + "/api/events?limit=10")
    ids = [e["event_id"] for e in body["events"]]
    assert len(ids) == 5 and ids[-2:] == ["plaza-2", "plaza-1"]  # newest first, collapsed
    one = body["events"][-1]
    assert one["snapshot_url"] == "/api/events/plaza-1/snapshot.jpg"  # kept from its start
    assert get(sink.url + one["snapshot_url"])[1] == jpg
    assert get(sink.url + "/api/events/plaza-2/snapshot.jpg")[0] == 404  # not a file name
    assert get(sink.url + "/api/events/nope/snapshot.jpg")[0] == 404
    assert get_json(sink.url + "/api/events?limit=x")[0] == 400


def test_mjpeg_capped_and_encoded_once_for_three_viewers(served, vtest_results) -> None:
    sink, _, _ = served
    sink.frame(vtest_results[0], b"")
    viewers = [MjpegViewer(sink.url + "/api/cameras/plaza/mjpeg") for _ in range(3)]
    for v in viewers:
        v.start()
    t0 = time.monotonic()
    fed = 1
    for r in vtest_results[1:]:  # ~20 fps: faster than the 10 fps cap
        time.sleep(0.05)
        sink.frame(r, b"")
        fed += 1
    time.sleep(0.5)
    elapsed = time.monotonic() - t0
    for v in viewers:
        v.stop.set()
    for v in viewers:
        v.join(5)
        assert v.error is None, v.error
        assert v.frames >= 3, f"a viewer got {v.frames} frames"
        assert v.frames <= 10 * elapsed + 2, f"{v.frames} frames in {elapsed:.1f} s at 10 fps"
        assert set(v.sizes) == {(320, 240)}, v.sizes  # capped width, aspect kept
    # One JPEG per frame however many viewers (at most one per fed frame).
    assert sink.state.frames.encodes <= fed, (sink.state.frames.encodes, fed)
    assert get(sink.url + "/api/cameras/nope/mjpeg")[0] == 404


def test_deepstack_detection_matches_the_detector(served, detector, labels) -> None:
    sink, _, _ = served
    data = (IMAGES / "dog.jpg").read_bytes()
    status, body = post_form(sink.url + "/v1/vision/detection",
                             {"image": ("dog.jpg", data), "min_confidence": "0.35"})
    assert status == 200 and body["success"] is True, body
    preds = body["predictions"]
    assert {"label", "confidence", "x_min", "y_min", "x_max", "y_max"} <= set(preds[0])
    found = {p["label"] for p in preds}
    assert {"dog", "bicycle"} <= found and found & {"car", "truck"}, found
    own = detector(cv2.imread(str(IMAGES / "dog.jpg")))
    for want in ("dog", "bicycle", "car|truck"):
        names = want.split("|")
        mine = [b for b, c in zip(own.xyxy, own.class_id, strict=True) if labels[c] in names]
        theirs = [[p["x_min"], p["y_min"], p["x_max"], p["y_max"]] for p in preds
                  if p["label"] in names]
        iou = box_iou(np.array(mine[:1], float), np.array(theirs, float)).max()
        assert iou >= 0.8, f"{want}: IoU {iou:.2f}"
    # min_confidence filters.
    status, high = post_form(sink.url + "/v1/vision/detection",
                             {"image": ("dog.jpg", data), "min_confidence": "0.99"})
    assert status == 200 and high["predictions"] == []


@pytest.mark.parametrize(("fields", "reason"), [
    ({"image": ("x.jpg", b"this is not an image")}, "is not an image"),
    ({"image": ("x.jpg", b"")}, "is empty"),
    ({"picture": ("x.jpg", b"abc")}, "no form field 'image'"),
    ({"image": ("dog.jpg", (IMAGES / "dog.jpg").read_bytes()), "min_confidence": "high"},
     "min_confidence must be a number"),
    ({"image": ("dog.jpg", (IMAGES / "dog.jpg").read_bytes()), "min_confidence": "7"},
     "min_confidence must be in 0..1"),
])
def test_deepstack_garbage_is_400_with_a_reason(served, fields, reason) -> None:
    sink, _, _ = served
    status, body = post_form(sink.url + "/v1/vision/detection", fields)
    assert status == 400 and body["success"] is False
    assert reason in body["error"], body


def test_bearer_token(tmp_path, vtest_results) -> None:
    tok = tmp_path / "token"
    tok.write_text("s3cret-token-0123456789\n")
    sink = HttpSink(HttpConfig(port=0, token_file=str(tok)))
    sink.open()
    try:
        sink.frame(vtest_results[0], b"")
        assert get(sink.url + "/api/cameras")[0] == 401
        assert get(sink.url + "/api/cameras", headers={"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": "Bearer s3cret-token-0123456789"}
        assert get(sink.url + "/api/cameras", headers=auth)[0] == 200
        assert get(sink.url + "/api/cameras/plaza/latest.jpg?token=s3cret-token-0123456789"
                   )[0] == 200
        assert get(sink.url + "/healthz")[0] == 200  # the probe and the page stay open
        assert get(sink.url + "/")[0] == 200
    finally:
        sink.close()
    tok.write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        HttpSink(HttpConfig(port=0, token_file=str(tok))).open()


def test_configured_cameras_are_listed_and_stream_before_their_first_frame(
        vtest_results) -> None:
    sink = HttpSink(HttpConfig(port=0, mjpeg_fps=10), cameras=["plaza", "gate"])
    sink.open()
    try:
        _, body = get_json(sink.url + "/api/cameras")
        assert [(c["id"], c["state"], c["seq"]) for c in body["cameras"]] == [
            ("gate", "unknown", None), ("plaza", "unknown", None)]
        viewer = MjpegViewer(sink.url + "/api/cameras/plaza/mjpeg")
        viewer.start()
        time.sleep(0.5)
        assert viewer.frames == 0 and viewer.error is None
        sink.frame(vtest_results[0], b"")
        deadline = time.monotonic() + 10
        while viewer.frames == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        viewer.stop.set()
        assert viewer.frames == 1 and viewer.error is None  # one frame, sent once
    finally:
        sink.close()


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        sink = HttpSink(HttpConfig(port=port))
        with pytest.raises(ConfigError, match=f"http: cannot listen on 127.0.0.1:{port}"):
            sink.open()
    sink.close()


def test_default_host_is_loopback() -> None:
    assert HttpConfig().host == "127.0.0.1"
    with pytest.raises(ValueError, match="extra"):
        HttpConfig(colour="red")
