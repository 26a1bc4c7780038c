"""Inspection stations inside the real daemon: the bundled photos as two live cameras, software
triggers fired with `lepton-edge trigger`, verdicts over real ZeroMQ, the verdict log exported
with `lepton-edge verdicts export`."""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

import pytest

from lepton_edge.messages import HealthMessage, VerdictMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import free_port, run_cli, write_config
from tests.support.inspection_rig import make_parts_video

pytest.importorskip("pymodbus", reason="inspection needs pymodbus: pip install 'lepton-edge[plc]'")

RULE = [{"id": "all", "count": [{"label": "dog", "exact": 1}, {"label": "bicycle", "min": 1}]}]


def station(cid: str, clip: Path, port: int) -> dict:
    return {"id": cid, "url": str(clip), "mode": "replay", "loop": True,
            "inspect": {"triggers": [{"type": "software",
                                      "endpoint": f"tcp://127.0.0.1:{port}"}],
                        "deadline_ms": 2000, "rois": RULE}}


def test_every_trigger_gets_its_verdict_pass_on_the_dog_fail_on_the_horses(
        tmp_path: Path, start_daemon) -> None:
    dog = make_parts_video(tmp_path / "dog.avi", ["dog"], frames_each=20)
    horses = make_parts_video(tmp_path / "horses.avi", ["horses"], frames_each=20)
    ports = {"dog-line": free_port(), "horse-line": free_port()}
    config = write_config(tmp_path / "line.yaml", precision="fp32", cameras=[
        station("dog-line", dog, ports["dog-line"]),
        station("horse-line", horses, ports["horse-line"])])
    daemon = start_daemon(config)
    endpoint = daemon.endpoint
    verdicts: list[VerdictMessage] = []
    done = threading.Event()

    def listen() -> None:
        with Subscriber(endpoint) as sub:
            while not done.is_set():
                msg = sub.receive(timeout=0.5)
                if isinstance(msg, VerdictMessage):
                    verdicts.append(msg)
                elif isinstance(msg, HealthMessage) and msg.state == "stopping":
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    # A station infers nothing until triggered: wait for its cameras, not for a first frame.
    assert daemon.wait_for_log("camera horse-line: connected", timeout=60), daemon.stderr()
    assert daemon.wait_for_log("camera dog-line: connected", timeout=10), daemon.stderr()
    time.sleep(0.5)  # the subscriber's subscriptions reach the publisher
    fired: dict[str, list[int]] = {cid: [] for cid in ports}
    for _ in range(3):
        for cid, port in ports.items():
            r = run_cli("trigger", f"tcp://127.0.0.1:{port}", "--camera", cid, timeout=30)
            assert r.returncode == 0, r.stderr
            fired[cid].append(int(r.stdout.split()[-1]))
            time.sleep(0.3)
    deadline = time.monotonic() + 30
    while len(verdicts) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    assert daemon.stop() == 0, daemon.stderr()
    listener.join(10)
    got = {(v.camera, int(v.trigger_id)): v for v in verdicts}
    assert set(got) == {(cid, t) for cid, ids in fired.items() for t in ids}  # one per trigger
    for t in fired["dog-line"]:
        assert got["dog-line", t].verdict == "pass", got["dog-line", t]
    for t in fired["horse-line"]:
        v = got["horse-line", t]
        assert v.verdict == "fail"
        assert {r.code for r in v.reasons} == {"count"}
        assert any("dog" in (r.rule or "") for r in v.reasons)
    # The durable log holds all six, as the quality department exports it.
    out = run_cli("verdicts", "export", "--state-dir", str(tmp_path / "state"),
                  "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert len(rows) == 6
    assert sorted(r["verdict"] for r in rows) == ["fail"] * 3 + ["pass"] * 3
