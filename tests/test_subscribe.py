"""The client library and `lepton-edge subscribe` against a real Publisher: exact camera
filtering (ZeroMQ matches prefixes) and the hint when nothing arrives."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from lepton_edge.config import Publish
from lepton_edge.messages import DetectionMessage, HealthMessage, health_payload
from lepton_edge.sinks.publisher import Publisher
from lepton_edge.subscribe import Subscriber
from tests.conftest import daemon_env, free_port, run_cli
from tests.sinks.test_publisher import make_keys
from tests.test_messages import payload

CAMERAS = ("gate-10", "gate-1.backup", "gate-1", "gate-2")


class Feed:
    """A Publisher sending one detection per camera in CAMERAS every 20 ms, in a thread."""

    def __init__(self, settings: Publish) -> None:
        self.ctx = zmq.Context()
        self.pub = Publisher(self.ctx, settings)
        self.pub.open()
        self.endpoint = self.pub.bound_endpoint
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self.pub.poll_subscriptions()
            for cam in CAMERAS:
                self.pub.send(f"det.{cam}", payload(camera=cam, seq=seq))
            seq += 1
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.pub.close()
        self.ctx.term()


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed(Publish(endpoint="tcp://127.0.0.1:0"))
    yield f
    f.close()


def detections(sub: Subscriber, n: int) -> list[DetectionMessage]:
    got: list[DetectionMessage] = []
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        msg = sub.receive(timeout=1)
        if isinstance(msg, DetectionMessage):
            got.append(msg)
    return got


def test_camera_filter_is_exact_not_a_prefix(feed: Feed) -> None:
    with Subscriber(feed.endpoint, cameras=["gate-1"]) as sub:
        got = detections(sub, 20)
    assert len(got) == 20
    assert {m.camera for m in got} == {"gate-1"}
    assert sub.filtered >= 19 * 2  # gate-10 and gate-1.backup, dropped here
    assert sub.missed == {}  # the filtered-out cameras' seq do not count as gaps


def test_several_cameras_and_all_cameras(feed: Feed) -> None:
    with Subscriber(feed.endpoint, cameras=["gate-1", "gate-2"]) as sub:
        assert {m.camera for m in detections(sub, 40)} == {"gate-1", "gate-2"}
    with Subscriber(feed.endpoint) as sub:
        assert {m.camera for m in detections(sub, 80)} == set(CAMERAS)
        assert sub.filtered == 0


def test_empty_camera_id_is_refused() -> None:
    with pytest.raises(ValueError, match="empty camera id"):
        Subscriber("tcp://127.0.0.1:9", cameras=[""])


def test_cli_camera_filter_is_exact(feed: Feed) -> None:
    result = run_cli("subscribe", feed.endpoint, "--camera", "gate-1", "--json", "--count", "10",
                     "--summary", "--timeout", "10", timeout=60)
    assert result.returncode == 0, result.stderr
    cams = [json.loads(line)["camera"] for line in result.stdout.splitlines()
            if line.startswith("{") and '"camera"' in line]
    assert cams == ["gate-1"] * 10
    assert "10 messages from 1 camera(s)" in result.stdout


def test_cli_refuses_an_empty_camera_id() -> None:
    result = run_cli("subscribe", "tcp://127.0.0.1:9", "--camera", "", "--timeout", "0.1")
    assert result.returncode == 2
    assert result.stderr.startswith("lepton-edge: error: --camera: an empty camera id")


# ------------------------------------------------------------------ silence (#15.7)


def test_library_warns_once_when_nothing_arrives(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nobody there
    with caplog.at_level(logging.WARNING, logger="lepton_edge.subscribe"), \
            Subscriber(endpoint, silence_warning=0.5) as sub:
        t0 = time.monotonic()
        assert sub.receive(timeout=1.5) is None
        assert time.monotonic() - t0 >= 1.4  # the warning did not cut the wait short
        assert sub.receive(timeout=0.7) is None
    hints = [r.getMessage() for r in caplog.records]
    assert len(hints) == 1, hints
    assert f"nothing received from {endpoint}" in hints[0] and "CURVE" in hints[0]


def test_library_says_nothing_when_messages_arrive(feed: Feed,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="lepton_edge.subscribe"), \
            Subscriber(feed.endpoint, silence_warning=0.5) as sub:
        assert detections(sub, 5)
        time.sleep(0.6)
        sub.receive(timeout=0.2)
    assert not caplog.records


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")
def test_cli_with_refused_keys_says_the_keys_may_be_wrong(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    feed = Feed(keys.settings)
    stranger = tmp_path / "elsewhere" / "stranger.key_secret"
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "lepton_edge", "subscribe", feed.endpoint,
             "--curve-server-key", str(tmp_path / "keys" / "server.key"),
             "--curve-client-key", str(stranger), "--warn-after", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon_env())
        try:
            line = proc.stderr.readline() if proc.stderr else ""
            waited = time.monotonic() - t0
        finally:
            proc.kill()
            proc.communicate(timeout=10)
        assert f"nothing received from {feed.endpoint} in 1 s" in line, line
        assert "public .key file is in the daemon's publish.curve.allowed_clients" in line
        assert waited < 20  # said while it keeps waiting (no --timeout), not only at exit
        allowed = run_cli("subscribe", feed.endpoint, "--count", "3", "--timeout", "10",
                          "--warn-after", "1",
                          "--curve-server-key", str(tmp_path / "keys" / "server.key"),
                          "--curve-client-key",
                          str(tmp_path / "keys" / "control-room.key_secret"), timeout=60)
        assert allowed.returncode == 0, allowed.stderr
        assert "nothing received" not in allowed.stderr  # the control: right keys, no hint
    finally:
        feed.close()


def test_cli_timeout_shorter_than_the_warning_still_gives_the_hint() -> None:
    result = run_cli("subscribe", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3")
    assert result.returncode == 0
    assert "subscribe: nothing received from" in result.stderr
    quiet = run_cli("subscribe", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3",
                    "--warn-after", "0")
    assert "nothing received" not in quiet.stderr


def test_health_counts_as_heard() -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint="tcp://127.0.0.1:0"))
    pub.open()
    try:
        with Subscriber(pub.bound_endpoint, context=ctx, silence_warning=0.2) as sub:
            assert pub.wait_for_subscribers(2, timeout=5)  # det. and health
            pub.send("health", health_payload(HealthMessage(
                ts=1.0, state="running", uptime_s=1.0, fps=0.0, subscribers=2, cameras=())))
            assert isinstance(sub.receive(timeout=5), HealthMessage)
            assert not sub.heard_nothing
    finally:
        pub.close()
        ctx.term()
