"""Shared test support: repo paths, free ports, configs in tmp, and the daemon as a real
subprocess (`python -m lepton_edge run`), stopped and reaped at teardown."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
VTEST = SAMPLES / "vtest.avi"
BIKES = SAMPLES / "bikes.mp4"
IMAGES = SAMPLES / "images"
ENGINE = REPO / "engines" / "yolov8n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, **fields: Any) -> Path:
    """A daemon config at `path`: bundled fp32 model on ONNX Runtime, 2 threads, a free
    loopback port, fields overriding; cameras default to 40 bench frames of vtest.avi."""
    config: dict[str, Any] = {
        "model": str(ENGINE), "backend": "onnxruntime", "precision": "fp32", "threads": 2,
        "state_dir": str(path.parent / "state"),
        "publish": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "health_interval": 0.5},
        "cameras": [{"id": "plaza", "url": str(VTEST), "mode": "bench", "max_frames": 40}],
    }
    config.update(fields)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[str]
    config: Path
    stderr_path: Path
    _lines: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        cfg = yaml.safe_load(self.config.read_text())
        return cfg["publish"]["endpoint"]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def wait_for_log(self, text: str, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return True
            if self.proc.poll() is not None:
                return text in self.stderr()
            time.sleep(0.05)
        return False


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC",
                                                            "WATCHDOG_PID", "JOURNAL_STREAM")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra or {})
    return env


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Any]:
    """start_daemon(config_path, *args, env=None) -> DaemonProcess (a real process)."""
    started: list[DaemonProcess] = []

    def start(config: Path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
        err = tmp_path / f"daemon-{len(started)}.stderr"
        with open(err, "w") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "lepton_edge", "run", "--config", str(config), *args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=daemon_env(env),
                cwd=tmp_path,
            )
        d = DaemonProcess(proc, config, err)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(10)
        if d.proc.stdout:
            d.proc.stdout.close()


def run_cli(*args: str, timeout: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m lepton_edge ARGS` as a real process."""
    return subprocess.run([sys.executable, "-m", "lepton_edge", *args], capture_output=True,
                          text=True, timeout=timeout, env=daemon_env(env))
