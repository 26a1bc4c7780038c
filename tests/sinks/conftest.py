"""Shared parts of the sink tests: the real detector on the bundled model, real frames of
vtest.avi with their real detections, event outcomes built from them, and a real Mosquitto
broker on a loopback port."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from lepton_edge.artifact import load_artifact
from lepton_edge.backends import create_backend
from lepton_edge.backends.base import BackendOptions
from lepton_edge.detections import Detections
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8
from lepton_edge.pipeline.preprocess import letterbox
from lepton_edge.results import FrameResult
from tests.conftest import ENGINE, VTEST, free_port


@pytest.fixture(scope="session")
def labels() -> tuple[str, ...]:
    return tuple(load_artifact(ENGINE).classes)


@pytest.fixture(scope="session")
def detector() -> Iterator[Callable[[np.ndarray], Detections]]:
    """The bundled YOLOv8n on ONNX Runtime: BGR image -> Detections, as the daemon does it."""
    art = load_artifact(ENGINE)
    with create_backend("onnxruntime", art, BackendOptions(threads=2)) as backend:
        def detect(image: np.ndarray) -> Detections:
            tensor, plan = letterbox(image, dtype=backend.input.dtype,
                                     layout=backend.input.layout)
            out = backend.submit(tensor).wait()[0][0]
            return decode_yolov8(out, plan, DecodeSettings(score=0.35))
        yield detect


@pytest.fixture(scope="session")
def vtest_results(detector, labels) -> list[FrameResult]:
    """The first 24 frames of vtest.avi with their real detections, as FrameResults of camera
    `plaza` (no track ids: not tracked)."""
    cap = cv2.VideoCapture(str(VTEST))
    out = []
    t0 = time.time()
    for i in range(24):
        ok, img = cap.read()
        assert ok, f"vtest.avi: frame {i} unreadable"
        img.setflags(write=False)
        t = time.perf_counter()
        dets = detector(img)
        out.append(FrameResult(camera="plaza", seq=i, frame=i, ts=t0 + i / 10, t_capture=t,
                               image=img, detections=dets, labels=labels,
                               latency_ms={"infer": (time.perf_counter() - t) * 1000}))
    cap.release()
    return out


@dataclass(frozen=True)
class EventOutcome:
    """An event outcome in the wire format (the analysis stage is not under test here)."""

    camera: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"event.{self.camera}"

    def to_payload(self) -> bytes:
        return json.dumps({"v": 1, "camera": self.camera, **self.body}).encode()


def event(camera: str, n: int, *, kind: str = "update", label: str = "person",
          box: list[float] | None = None, zones: list[str] | None = None,
          snapshot: str | None = None, ts: float | None = None) -> EventOutcome:
    now = time.time() if ts is None else ts
    return EventOutcome(camera, {
        "type": kind, "event_id": f"{camera}-{n}", "track_id": n, "label": label,
        "score": 0.8, "top_score": 0.9, "ts": now, "ts_start": now,
        "ts_end": now if kind == "end" else None, "box": box or [10, 10, 50, 90],
        "zones": zones or [], "entered_zones": [], "lines_crossed": [], "snapshot": snapshot,
        "reason": "left" if kind == "end" else None,
    })


def events_from(result: FrameResult, label_of: Callable[[int], str]) -> list[EventOutcome]:
    """One `update` event per detection of a real frame (ids from the frame and the box)."""
    return [event(result.camera, result.seq * 1000 + i, label=label_of(int(c)),
                  box=[round(v, 1) for v in b], ts=result.ts)
            for i, (b, c) in enumerate(zip(result.detections.xyxy.tolist(),
                                           result.detections.class_id.tolist(), strict=True))]


# ---------------------------------------------------------------- a real Mosquitto

@dataclass
class Broker:
    port: int
    workdir: Path
    users: dict[str, str] | None = None
    tls: Path | None = None  # a directory with ca.pem, server.pem, server.key
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        conf = self.workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1"]
        if self.tls is not None:
            lines += [f"cafile {self.tls}/ca.pem", f"certfile {self.tls}/server.pem",
                      f"keyfile {self.tls}/server.key", "require_certificate true"]
        lines += ["persistence true",
                 f"persistence_location {self.workdir}/", "autosave_interval 1",
                 f"log_dest file {self.workdir}/mosquitto.log"]
        if self.users:
            pw = self.workdir / "passwd"
            pw.write_text("")
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read tmp_path
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def saved(self, timeout: float = 10.0) -> None:
        """Wait for the broker's next autosave (what it holds now survives a kill): its log
        gets one more `Saving in-memory database` line (every ~2 s with autosave_interval 1)."""
        log_file = self.workdir / "mosquitto.log"

        def saves() -> int:
            return log_file.read_text().count("Saving in-memory database")
        before = saves()
        deadline = time.monotonic() + timeout
        while saves() <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not autosave within {timeout} s")
            time.sleep(0.05)
        # The line comes before the write (a temporary file, then renamed): let it finish.
        while (self.workdir / "mosquitto.db.new").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def broker_factory(tmp_path) -> Iterator[Callable[..., Broker]]:
    if shutil.which("mosquitto") is None:
        pytest.skip("needs Debian's mosquitto (scripts/install-system-deps.sh)")
    made: list[Broker] = []

    def make(users: dict[str, str] | None = None, tls: Path | None = None) -> Broker:
        b = Broker(free_port(), tmp_path / f"broker{len(made)}", users, tls)
        b.workdir.mkdir()
        made.append(b)
        return b.start()
    yield make
    for b in made:
        b.stop()
