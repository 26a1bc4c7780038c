"""Inspection stations inside the real daemon: the bundled photos as two live cameras, software
triggers fired with `lepton-edge trigger`, verdicts over real ZeroMQ, the verdict log exported
with `lepton-edge verdicts export`."""

from __future__ import annotations

import csv
import io
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.messages import HealthMessage, VerdictMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import free_port, run_cli, write_config
from tests.support.inspection_rig import IMAGES, make_parts_video

pytest.importorskip("pymodbus", reason="inspection needs pymodbus: pip install 'lepton-edge[plc]'")

RULE = [{"id": "all", "count": [{"label": "dog", "exact": 1}, {"label": "bicycle", "min": 1}]}]


def station(cid: str, clip: Path, port: int) -> dict:
    return {"id": cid, "url": str(clip), "mode": "replay", "loop": True,
            "inspect": {"triggers": [{"type": "software",
                                      "endpoint": f"tcp://127.0.0.1:{port}"}],
                        "deadline_ms": 2000, "rois": RULE}}


def fire_and_collect(daemon, ports: dict[str, int], each: int) -> tuple[list[VerdictMessage],
                                                                       dict[str, list[int]]]:
    """Fire `each` software triggers at every station of `ports` with `lepton-edge trigger`,
    collect the verdicts over ZeroMQ, stop the daemon; (verdicts, trigger ids per camera)."""
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
    for cid in ports:
        assert daemon.wait_for_log(f"camera {cid}: connected", timeout=60), daemon.stderr()
    time.sleep(0.5)  # the subscriber's subscriptions reach the publisher
    fired: dict[str, list[int]] = {cid: [] for cid in ports}
    for _ in range(each):
        for cid, port in ports.items():
            r = run_cli("trigger", f"tcp://127.0.0.1:{port}", "--camera", cid, timeout=30)
            assert r.returncode == 0, r.stderr
            fired[cid].append(int(r.stdout.split()[-1]))
            time.sleep(0.3)
    deadline = time.monotonic() + 30
    while len(verdicts) < each * len(ports) and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    assert daemon.stop() == 0, daemon.stderr()
    listener.join(10)
    return verdicts, fired


def test_every_trigger_gets_its_verdict_pass_on_the_dog_fail_on_the_horses(
        tmp_path: Path, start_daemon) -> None:
    dog = make_parts_video(tmp_path / "dog.avi", ["dog"], frames_each=20)
    horses = make_parts_video(tmp_path / "horses.avi", ["horses"], frames_each=20)
    ports = {"dog-line": free_port(), "horse-line": free_port()}
    config = write_config(tmp_path / "line.yaml", precision="fp32", cameras=[
        station("dog-line", dog, ports["dog-line"]),
        station("horse-line", horses, ports["horse-line"])])
    daemon = start_daemon(config)
    verdicts, fired = fire_and_collect(daemon, ports, each=3)
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


def wide_view(path: Path, frames: int = 20) -> tuple[Path, tuple[int, int, int, int]]:
    """A 1920x1080 clip whose "part" is dog.jpg at 30% (230x173 pixels) near a corner: too
    small for the model in the letterboxed whole frame. Returns the clip and the part's box."""
    img = cv2.imread(str(IMAGES / "dog.jpg"))
    w, h = round(img.shape[1] * 0.3), round(img.shape[0] * 0.3)
    x, y = 1920 - w - 100, 1080 - h - 80
    canvas = np.full((1080, 1920, 3), 40, np.uint8)
    canvas[y:y + h, x:x + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (1920, 1080))
    for _ in range(frames):
        writer.write(canvas)
    writer.release()
    return path, (x, y, x + w, y + h)


def test_an_roi_crop_finds_the_small_part_the_whole_frame_misses(
        tmp_path: Path, start_daemon) -> None:
    clip, (x1, y1, x2, y2) = wide_view(tmp_path / "wide.avi")
    roi = [{**RULE[0], "rect": [x1 - 20, y1 - 20, x2 + 20, y2 + 20]}]
    ports = {"cropped": free_port(), "whole": free_port()}
    cameras = []
    for cid, crop in (("cropped", True), ("whole", False)):
        cam = station(cid, clip, ports[cid])
        cam["inspect"] = {**cam["inspect"], "rois": roi, "crop": crop}
        cameras.append(cam)
    config = write_config(tmp_path / "line.yaml", precision="fp32", cameras=cameras)
    daemon = start_daemon(config)
    verdicts, fired = fire_and_collect(daemon, ports, each=2)
    got = {(v.camera, int(v.trigger_id)): v for v in verdicts}
    assert set(got) == {(cid, t) for cid, ids in fired.items() for t in ids}
    for t in fired["whole"]:  # 768x576 of the model's 640x360: the dog is 77x58 pixels
        assert got["whole", t].verdict == "fail", got["whole", t]
    for t in fired["cropped"]:  # the 270x213 region at the model's 640: found
        v = got["cropped", t]
        assert v.verdict == "pass", v
        dog = next(d for d in v.rois["all"] if d.label == "dog")
        bx1, by1, bx2, by2 = dog.box
        # in whole-frame pixels, inside the part (not the crop's own 0..270 coordinates)
        assert x1 - 2 <= bx1 < bx2 <= x2 + 2 and y1 - 2 <= by1 < by2 <= y2 + 2, dog.box
    assert daemon.wait_for_log("region 270x213 at", timeout=1) or \
        "region 270x213 at" in daemon.stderr()
