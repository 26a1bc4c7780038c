"""Verdicts on MQTT delivered from the durable verdict log, against a real Mosquitto: an outage
far past the sink's memory queue, a daemon restart while the broker is down (with the `error:
restart` answers of a killed run), and a delivery mark that moves only on the broker's PUBACK.
The verdicts come from a real inspection station (its triggers answered by the deadline or as
overruns, no frames needed) writing a real SQLite log."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("paho.mqtt", reason="needs paho-mqtt (pip install 'lepton-edge[mqtt]')")

from lepton_edge.analysis.inspection.station import InspectConfig, Station, build_station
from lepton_edge.results import Outcome
from lepton_edge.sinks.mqtt import MqttConfig, MqttSink
from lepton_edge.sinks.verdict_log import FILE_NAME, VerdictLog
from tests.sinks.conftest import Broker
from tests.sinks.test_mqtt import Subscriber, _wait

CAMERA = "line-1"
TOPIC = f"lepton-edge/{CAMERA}/verdict"
CONSUMER = "mqtt:box1"


def _inspect(**extra: Any) -> InspectConfig:
    """A station whose triggers are fired by the test; with no frames every verdict is decided
    by the deadline (`fail: timeout`) or at the trigger (`error: overrun`)."""
    return InspectConfig.model_validate({
        "triggers": [{"type": "interval", "every": 86400}], "deadline_ms": 30,
        "max_pending": 2, "evidence": {"enabled": False},
        "rois": [{"id": "tray", "count": [{"label": "dog", "exact": 1}]}], **extra})


def _sink(port: int, state: Path, **cfg: Any) -> MqttSink:
    config = MqttConfig(host="127.0.0.1", port=port, client_id="box1", reconnect_min=1,
                        reconnect_max=1, **cfg)
    return MqttSink(config, cameras=[CAMERA], verdict_logs={CAMERA: state / FILE_NAME})


class Recorded:
    """The station's emit: keeps each verdict's live payload, then hands it to the sink."""

    def __init__(self, sink: MqttSink) -> None:
        self.sink = sink
        self.payloads: dict[int, bytes] = {}
        self.order: list[int] = []  # trigger ids in the order the station decided them

    def __call__(self, outcome: Outcome) -> None:
        t = outcome.trigger_id  # type: ignore[attr-defined]
        self.payloads[t] = outcome.to_payload()
        self.order.append(t)
        self.sink.outcome(outcome)


def _fire(station: Station, n: int) -> list[int]:
    ids = [station.fire() for _ in range(n)]
    assert _wait(lambda: station.pending == 0, 5), "the station left triggers unanswered"
    return ids


def _stored_mark(state: Path) -> int | None:
    with sqlite3.connect(state / FILE_NAME) as db:
        rows = db.execute("SELECT trigger_id FROM delivered WHERE consumer = ? AND camera = ?",
                          (CONSUMER, CAMERA)).fetchall()
    return rows[0][0] if rows else None


def _ids(sub: Subscriber) -> list[int]:
    return [json.loads(p)["trigger_id"] for p in sub.on(TOPIC)]


def _persistent_subscriber(broker: Broker) -> Subscriber:
    sub = Subscriber(broker.port, TOPIC, client_id="quality", clean=False)
    broker.saved()  # the broker keeps the QoS 1 session across the kill
    return sub


def test_outage_past_the_memory_queue_loses_no_verdict(broker_factory, tmp_path) -> None:
    state = tmp_path / "state"
    broker = broker_factory()
    sub = _persistent_subscriber(broker)
    sink = _sink(broker.port, state, queue=2)  # memory queue and paho's queue: 2 messages
    emit = Recorded(sink)
    sink.open()
    station = build_station(CAMERA, _inspect(), emit, state)
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        broker.kill()
        assert _wait(lambda: sink.state == "disconnected", 5)
        # 30 parts while the broker is down: 1 and 2 wait for frames and time out, 3..30 are
        # answered at once as overruns: decided out of trigger order, 15x the queue.
        ids = _fire(station, 30)
        assert ids == list(range(1, 31))
        assert sink.pending_outcomes == 0, "verdicts of a logged camera must not fill memory"
        broker.start()
        assert _wait(lambda: sink.state == "connected", 10), sink.last_error
        assert sub.wait(lambda: len(set(_ids(sub))) == 30, 15), (
            f"{len(set(_ids(sub)))} of 30; sink published {sink.published}, marks "
            f"{sink.verdicts.marks()}, subscriber connected {sub.client.is_connected()}")
        # Nothing was in flight at the kill: each verdict exactly once, in trigger order.
        assert _ids(sub) == ids
        # What the log replays is byte for byte what the station emitted live (schema v1).
        assert sub.on(TOPIC) == [emit.payloads[t] for t in ids]
        with VerdictLog(state / FILE_NAME) as vlog:
            logged = {r["trigger_id"]: r["payload"].encode() for r in vlog.rows(CAMERA)}
        assert logged == emit.payloads
        assert _wait(lambda: sink.verdicts.marks() == {CAMERA: 30}, 5), sink.verdicts.marks()
        assert _wait(lambda: _stored_mark(state) == 30, 5)
        assert sink.status()["lost"] == 0 and sink.outcomes_lost == 0
    finally:
        station.close()
        sink.close()
        sub.close()


def test_restart_with_the_broker_down_delivers_after_it(broker_factory, tmp_path,
                                                        caplog) -> None:
    state = tmp_path / "state"
    broker = broker_factory()
    sub = _persistent_subscriber(broker)
    broker.kill()
    first = _sink(broker.port, state)
    first.open()
    station = build_station(CAMERA, _inspect(), first.outcome, state)
    assert _fire(station, 5) == [1, 2, 3, 4, 5]
    station.close()
    # A run killed with two triggers logged and unanswered (test_restart.py kills a real one).
    with VerdictLog(state / FILE_NAME) as vlog:
        for t in (6, 7):
            vlog.record_trigger(CAMERA, t, "software", time.time())
    caplog.set_level(logging.WARNING, logger="lepton_edge.sinks.mqtt")
    first.close()  # the daemon stops with the broker still down
    assert first.status()["lost"] == 0, "verdicts in the log are not lost"
    assert any("stay in the verdict log" in r.getMessage() for r in caplog.records)
    assert _stored_mark(state) == 0

    broker.start()
    second = _sink(broker.port, state)  # the next start of the daemon: sinks, then stations
    second.open()
    station = build_station(CAMERA, _inspect(), second.outcome, state)  # answers 6, 7
    try:
        assert sub.wait(lambda: len(set(_ids(sub))) == 7, 15), (
            _ids(sub), second.published, second.verdicts.marks(), second.state,
            (broker.workdir / "mosquitto.log").read_text())
        assert _ids(sub) == [1, 2, 3, 4, 5, 6, 7]
        got = [json.loads(p) for p in sub.on(TOPIC)]
        assert [(v["verdict"], v["reasons"][0]["code"]) for v in got[5:]] == [
            ("error", "restart")] * 2
        assert {v["verdict"] for v in got[:5]} == {"fail", "error"}  # timeouts and overruns
        assert _wait(lambda: _stored_mark(state) == 7, 5)
    finally:
        station.close()
        second.close()
        sub.close()


def test_the_mark_moves_only_on_the_brokers_acknowledgement(broker_factory, tmp_path) -> None:
    state = tmp_path / "state"
    broker = broker_factory()
    sub = Subscriber(broker.port, TOPIC)
    sink = _sink(broker.port, state)
    emit = Recorded(sink)
    sink.open()
    station = build_station(CAMERA, _inspect(deadline_ms=1000), emit, state)
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        assert _fire(station, 1) == [1]
        assert sub.wait(lambda: _ids(sub) == [1])
        assert _wait(lambda: _stored_mark(state) == 1, 5)
        published = sink.published
        # A frozen broker: the link stays up, PUBLISHes go out, no PUBACK comes back.
        os.kill(broker.proc.pid, signal.SIGSTOP)
        try:
            assert _fire(station, 3) == [2, 3, 4]
            assert _wait(lambda: sink.published == published + 3, 5), "not handed to paho"
            time.sleep(1.5)  # the delivery thread looks at least once more
            assert sink.verdicts.marks() == {CAMERA: 1}
            assert _stored_mark(state) == 1, "the mark moved without a PUBACK"
        finally:
            os.kill(broker.proc.pid, signal.SIGCONT)
        assert _wait(lambda: _stored_mark(state) == 4, 10), _stored_mark(state)
        # Connected, verdicts go out as decided: 4 (an overrun) before 2 and 3 (timeouts).
        assert emit.order == [1, 4, 2, 3]
        assert sub.wait(lambda: _ids(sub) == emit.order), _ids(sub)
    finally:
        station.close()
        sink.close()
        sub.close()
    assert _stored_mark(state) == 4


def test_an_undecided_trigger_holds_the_mark_and_a_verdict_the_log_lacks_goes_out(
        broker_factory, tmp_path, caplog) -> None:
    state = tmp_path / "state"
    broker = broker_factory()
    sub = Subscriber(broker.port, TOPIC)
    sink = _sink(broker.port, state)
    sink.open()
    station = build_station(CAMERA, _inspect(deadline_ms=1500, max_pending=1), sink.outcome,
                            state)
    try:
        assert _wait(lambda: sink.state == "connected"), sink.last_error
        assert [station.fire(), station.fire()] == [1, 2]  # 1 waits for a frame, 2 overruns
        assert sub.wait(lambda: _ids(sub) == [2])
        time.sleep(0.5)  # 2 is acknowledged; 1 is still undecided in the log
        assert station.pending == 1
        assert _stored_mark(state) == 0, "the mark passed a trigger still waiting"
        assert sub.wait(lambda: _ids(sub) == [2, 1], 5)  # 1 times out: sent, not skipped
        assert _wait(lambda: _stored_mark(state) == 2, 5)

        # Trigger 3's verdict, whose log write failed (disk full), still goes out, from memory;
        # the mark moves over rows only.
        caplog.set_level(logging.WARNING, logger="lepton_edge.sinks.mqtt")
        with VerdictLog(state / FILE_NAME) as vlog:
            row = next(vlog.rows(CAMERA))
        sink.outcome(_Unlogged({**json.loads(row["payload"]), "trigger_id": 3}))
        assert sub.wait(lambda: _ids(sub) == [2, 1, 3], 5), _ids(sub)
        assert any("not in the verdict log" in r.getMessage() for r in caplog.records)
        time.sleep(0.3)
        assert _stored_mark(state) == 2
    finally:
        station.close()
        sink.close()
        sub.close()


class _Unlogged:
    """A verdict outcome the log never got."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.trigger_id = body["trigger_id"]
        self.camera = body["camera"]
        self.topic = f"verdict.{self.camera}"

    def to_payload(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def test_the_daemon_delivers_verdicts_from_its_log_after_a_restart(
        broker_factory, tmp_path, start_daemon) -> None:
    """The wiring: the daemon hands the bridge the file its station writes. The broker is down
    while the daemon runs, answers 3 triggers and stops; with the memory queue set to 1 only
    the log can hold them. The next start (broker up) delivers them."""
    pytest.importorskip("pymodbus", reason="inspection needs pymodbus (the plc extra)")
    from lepton_edge.analysis.inspection.commands import send_trigger
    from tests.conftest import free_port, write_config
    from tests.support.inspection_rig import make_parts_video

    broker = broker_factory()
    sub = _persistent_subscriber(broker)
    broker.kill()
    clip = make_parts_video(tmp_path / "dog.avi", ["dog"], frames_each=20)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "line.yaml", precision="fp32", cameras=[{
        "id": CAMERA, "url": str(clip), "mode": "replay", "loop": True,
        "inspect": {"triggers": [{"type": "software", "endpoint": endpoint}],
                    "deadline_ms": 2000, "max_pending": 4, "rois": [{"id": "all", "count": [
                        {"label": "dog", "exact": 1}]}]}}],
        mqtt={"host": "127.0.0.1", "port": broker.port, "client_id": "box1", "queue": 1,
              "reconnect_max": 1})
    state = tmp_path / "state"
    try:
        first = start_daemon(config)
        assert first.wait_for_log(f"camera {CAMERA}: connected", timeout=60), first.stderr()
        fired = [send_trigger(endpoint, CAMERA)["trigger_id"] for _ in range(3)]
        assert fired == [1, 2, 3]
        with VerdictLog(state / FILE_NAME) as vlog:
            assert _wait(lambda: all(r["verdict"] for r in vlog.rows(CAMERA))
                         and len(list(vlog.rows(CAMERA))) == 3, 20)
        assert first.stop() == 0, first.stderr()
        assert "verdicts the broker did not acknowledge: line-1 3" in first.stderr()
        assert _stored_mark(state) == 0

        broker.start()
        second = start_daemon(config)
        assert sub.wait(lambda: len(set(_ids(sub))) == 3, 60), (_ids(sub), second.stderr())
        assert _ids(sub) == fired
        assert {json.loads(p)["verdict"] for p in sub.on(TOPIC)} == {"pass"}
        assert _wait(lambda: _stored_mark(state) == 3, 10)
        assert second.stop() == 0, second.stderr()
    finally:
        sub.close()
