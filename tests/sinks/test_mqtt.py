"""The MQTT bridge against a real Mosquitto on a loopback port: events, retained discovery in
Home Assistant's format, counts from real detections, an outage with the broker killed, and a
refused login."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("paho.mqtt", reason="needs paho-mqtt (pip install 'lepton-edge[mqtt]')")
import paho.mqtt.client as mqtt

from lepton_edge.errors import ConfigError
from lepton_edge.messages import CameraHealth, HealthMessage
from lepton_edge.sinks.mqtt import MqttConfig, MqttSink, track_counts
from tests.sinks.conftest import event


class Subscriber:
    """A real MQTT client that records (topic, payload, retain) of what it receives."""

    def __init__(self, port: int, topics: str | list[str], *, client_id: str = "",
                 clean: bool = True) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.topics = [topics] if isinstance(topics, str) else topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "subscriber: no connection to the broker"

    def _on_connect(self, client, _u, _f, reason, _p) -> None:
        for t in self.topics:
            client.subscribe(t, qos=1)
        time.sleep(0.1)
        self.connected.set()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.05)
        return pred()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _sink(port: int, **kw: Any) -> MqttSink:
    cfg = MqttConfig(host="127.0.0.1", port=port, client_id=kw.pop("client_id", "box1"),
                     **kw.pop("cfg", {}))
    return MqttSink(cfg, cameras=["plaza"], zones={"plaza": ["door"]}, **kw)


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_events_counts_and_home_assistant_discovery(broker_factory, vtest_results) -> None:
    broker = broker_factory()
    sink = _sink(broker.port)
    sink.open()
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        sub = Subscriber(broker.port, ["lepton-edge/#", "homeassistant/#"])
        for r in vtest_results[:6]:
            sink.frame(r, b"")
        for n in range(5):
            sink.outcome(event("plaza", n, zones=["door"] if n < 3 else ["porch"] if n == 3
                               else []))
        sink.outcome(event("plaza", 0, kind="end"))
        sink.health(HealthMessage(ts=time.time(), state="running", uptime_s=1.0, fps=9.5,
                                  subscribers=0, cameras=(CameraHealth(
                                      "plaza", "connected", 9.5, 6, 0, 0, 6),)))
        assert sub.wait(lambda: len(sub.on("lepton-edge/plaza/event")) == 6)
        got = [json.loads(p) for p in sub.on("lepton-edge/plaza/event")]
        assert [(e["event_id"], e["type"]) for e in got] == (
            [(f"plaza-{n}", "update") for n in range(5)] + [("plaza-0", "end")])

        # Discovery: retained, Home Assistant's documented topic and keys.
        topic = "homeassistant/sensor/box1/plaza_person_count/config"
        assert sub.wait(lambda: bool(sub.on(topic)))
        retained = {t: p for t, p, r in sub.messages if r}
        assert topic in retained, "discovery config is not retained"
        cfg = json.loads(retained[topic])
        assert cfg["state_topic"] == "lepton-edge/plaza/count/person"
        assert cfg["unique_id"] == "box1_plaza_person_count"
        assert cfg["availability_topic"] == "lepton-edge/status"
        assert cfg["device"]["identifiers"] == ["box1_plaza"]
        zone = json.loads(retained["homeassistant/binary_sensor/box1/plaza_door_occupancy/config"])
        assert zone["device_class"] == "occupancy"
        assert zone["state_topic"] == "lepton-edge/plaza/zone/door"
        assert (zone["payload_on"], zone["payload_off"]) == ("ON", "OFF")
        assert retained["lepton-edge/status"] == b"online"
        # A zone first seen in an event gets its binary sensor too.
        porch = "homeassistant/binary_sensor/box1/plaza_porch_occupancy/config"
        assert sub.wait(lambda: bool(sub.on(porch)))
        assert sub.wait(lambda: sub.on("lepton-edge/plaza/zone/porch")[-1:] == [b"ON"])

        # Counts: retained, the newest frame's persons, from the real detections.
        want = track_counts(vtest_results[5], ["person"])["person"]
        assert want > 0
        assert sub.wait(lambda: sub.on("lepton-edge/plaza/count/person")[-1:] == [
            str(want).encode()])
        # Zone: ON while events 1..3 are open in it.
        assert sub.wait(lambda: sub.on("lepton-edge/plaza/zone/door")[-1:] == [b"ON"])
        assert sub.wait(lambda: sub.on("lepton-edge/plaza/state")[-1:] == [b"connected"])
        assert sub.wait(lambda: bool(sub.on("lepton-edge/health")))
        sub.close()

        # A late subscriber gets the retained state at once.
        late = Subscriber(broker.port, "lepton-edge/plaza/count/person")
        assert late.wait(lambda: late.on("lepton-edge/plaza/count/person") == [
            str(want).encode()])
        late.close()
    finally:
        sink.close()
    watcher = Subscriber(broker.port, "lepton-edge/status")
    assert watcher.wait(lambda: watcher.on("lepton-edge/status") == [b"offline"])
    watcher.close()


def test_broker_killed_5s_every_event_delivered_in_order(broker_factory) -> None:
    broker = broker_factory()
    # A persistent QoS 1 subscriber (its session is saved by the broker's autosave).
    sub = Subscriber(broker.port, "lepton-edge/plaza/event", client_id="watcher", clean=False)
    sink = _sink(broker.port)
    sink.open()
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        for n in range(20):
            sink.outcome(event("plaza", n))
        assert sub.wait(lambda: len(sub.on("lepton-edge/plaza/event")) == 20)
        broker.saved()  # the broker saves the subscriber's session (it survives the kill)
        broker.kill()
        assert _wait(lambda: sink.state == "disconnected", 5)
        t_end = time.monotonic() + 5
        n = 20
        while time.monotonic() < t_end:  # the outage: ~100 events in 5 s
            sink.outcome(event("plaza", n))
            n += 1
            time.sleep(0.05)
        assert sink.pending_outcomes > 50, "outcomes should wait in the sink's queue"
        broker.start()
        assert _wait(lambda: sink.state == "connected", 30), sink.last_error
        assert sub.wait(lambda: len(set(sub.on("lepton-edge/plaza/event"))) == n, 30), (
            f"{len(set(sub.on('lepton-edge/plaza/event')))} of {n} delivered")
        ids = [json.loads(p)["track_id"] for p in sub.on("lepton-edge/plaza/event")]
        first = list(dict.fromkeys(ids))
        assert first == list(range(n)), "events out of order"
        dups = len(ids) - len(first)
        # QoS 1 may redeliver what was in flight at the kill (paho's window: 20), no more.
        assert dups <= 20, f"{dups} duplicates"
        assert sink.pending_outcomes == 0 and sink.outcomes_lost == 0
    finally:
        sink.close()
        sub.close()


def test_wrong_credentials_clear_error_and_keeps_running(broker_factory, tmp_path, caplog,
                                                         vtest_results) -> None:
    broker = broker_factory(users={"box": "right"})
    pw = tmp_path / "mqtt-password"
    pw.write_text("wrong\n")
    caplog.set_level(logging.ERROR, logger="lepton_edge.sinks.mqtt")
    sink = _sink(broker.port, cfg={"username": "box", "password_file": str(pw),
                                   "reconnect_min": 1, "reconnect_max": 2})
    sink.open()
    try:
        assert _wait(lambda: sink.state == "auth_failed"), (sink.state, sink.last_error)
        assert "refused the connection" in sink.last_error
        assert "check mqtt.username and mqtt.password_file" in sink.last_error
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("refused the connection" in e for e in errors), errors
        # It keeps running: frames and outcomes are accepted, outcomes wait.
        sink.frame(vtest_results[0], b"")
        sink.outcome(event("plaza", 1))
        time.sleep(2.5)  # at least one more refused attempt
        assert sink.state == "auth_failed" and sink._thread.is_alive()
        assert sink.pending_outcomes == 1
        status = sink.status()
        assert (status["state"], status["pending"], status["lost"]) == ("auth_failed", 1, 0)
        assert status["last_error"] == sink.last_error
        assert len([e for e in errors if "refused" in e]) == 1, "logged once, not per retry"
    finally:
        sink.close()


def test_password_file_missing_is_a_config_error(tmp_path) -> None:
    sink = _sink(1883, cfg={"username": "box", "password_file": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: cannot read"):
        sink.open()


@pytest.mark.parametrize(("fields", "message"), [
    ({"password_file": "pw"}, "password_file needs username"),
    ({"reconnect_min": 10, "reconnect_max": 5}, "must be >= reconnect_min"),
    ({"tls": {"cert_file": "c.pem"}}, "cert_file and key_file go together"),
    ({"qos": 3}, "qos"),
    ({"prefix": "a/#"}, "prefix"),
    ({"colour": "red"}, "colour"),
])
def test_config_refuses(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        MqttConfig(host="h", **fields)


def test_counts_distinct_tracks(vtest_results) -> None:
    r = vtest_results[3]
    n = len(r.detections)
    tracked = r.detections.with_tracks([7] * n)  # every box one track -> one of its class
    from dataclasses import replace

    rr = replace(r, detections=tracked)
    labels = {r.label(c) for c in r.detections.class_id.tolist()}
    counts = track_counts(rr, sorted(labels))
    assert all(v == 1 for v in counts.values()), counts
    untracked = replace(r, detections=r.detections.with_tracks([-1] * n))
    assert set(track_counts(untracked, ["person"]).values()) == {0}


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _pki(d) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout",
                 f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out",
                 f"{name}.pem", cwd=d)


def test_tls_with_a_client_certificate(broker_factory, tmp_path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make test certificates")
    pki, other = tmp_path / "pki", tmp_path / "other"
    _pki(pki)
    _pki(other)
    broker = broker_factory(tls=pki)
    tls = {"ca_file": str(pki / "ca.pem"), "cert_file": str(pki / "client.pem"),
           "key_file": str(pki / "client.key")}
    sink = _sink(broker.port, cfg={"tls": tls})
    sink.open()
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        sink.outcome(event("plaza", 1))
        assert _wait(lambda: sink.pending_outcomes == 0 and sink.published == 1)
    finally:
        sink.close()
    wrong = _sink(broker.port, client_id="box2",
                  cfg={"tls": {**tls, "ca_file": str(other / "ca.pem")}})
    wrong.open()
    try:
        assert _wait(lambda: wrong.last_error is not None), wrong.state
        assert wrong.state == "disconnected"
        assert "TLS handshake failed: check mqtt.tls" in wrong.last_error
    finally:
        wrong.close()
    with pytest.raises(ConfigError, match="does not exist"):
        _sink(broker.port, cfg={"tls": {"ca_file": str(tmp_path / "nope.pem")}}).open()
