"""Signals against the running daemon (a real process, a real subscriber): SIGTERM drains and
exits 0 well within TimeoutStopSec; SIGHUP applies a changed camera list without touching the
unchanged camera, and refuses a broken config or a change that needs a restart while the old
config keeps running."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import BIKES, VTEST, DaemonProcess, write_config
from tests.support.message_log import MessageLog
from tests.support.notify_listener import NotifyListener

TIMEOUT_STOP_SEC = 20.0  # systemd/lepton-edge.service

PLAZA = {"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}
STREET = {"id": "street", "url": str(BIKES), "mode": "replay", "loop": True}
GATE = {"id": "gate", "url": str(BIKES), "mode": "replay", "loop": True}


def wait_count(daemon: DaemonProcess, text: str, count: int, timeout: float = 20.0) -> bool:
    """Wait until `text` occurs `count` times in the daemon's log."""
    deadline = time.monotonic() + timeout
    while daemon.stderr().count(text) < count:
        if time.monotonic() >= deadline or daemon.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return True


def rewrite(config: Path, **changes: Any) -> None:
    data = yaml.safe_load(config.read_text())
    data.update(changes)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def test_sigterm_drains_publishes_the_end_and_exits_0(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[PLAZA])
    endpoint = yaml.safe_load(cfg.read_text())["publish"]["endpoint"]
    with MessageLog(endpoint) as log:
        daemon = start_daemon(cfg)
        assert log.wait(lambda: len(log.detections()) >= 10, timeout=60), daemon.stderr()
        t0 = time.monotonic()
        daemon.send(signal.SIGTERM)
        code = daemon.wait(TIMEOUT_STOP_SEC)
        took = time.monotonic() - t0
        assert log.wait(lambda: any(h.state == "stopping" for h in log.health()), timeout=5)
    print(f"\nSIGTERM to exit: {took:.2f} s")
    assert code == 0, daemon.stderr()
    assert took < 5.0, "the drain should take about a second, TimeoutStopSec is 20 s"
    final = log.health()[-1]
    assert final.state == "stopping"
    dets = log.detections("plaza")
    published = final.cameras[0].published
    assert dets[-1].seq == published - 1, "the frames drained at exit must reach the subscriber"
    assert [m.seq for m in dets] == list(range(dets[0].seq, published))
    assert log.missed == {}
    assert "Traceback" not in daemon.stderr()


def test_sighup_adds_removes_keeps_and_refuses(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[PLAZA, STREET])
    endpoint = yaml.safe_load(cfg.read_text())["publish"]["endpoint"]
    with MessageLog(endpoint) as log, NotifyListener(tmp_path) as rx:
        daemon = start_daemon(cfg, env=rx.env())

        def publishing(camera: str, since: float, n: int = 3) -> bool:
            return log.wait(lambda: len(log.detections(camera, since)) >= n, timeout=30)

        assert publishing("plaza", 0) and publishing("street", 0), daemon.stderr()

        # 1. Remove street, add gate, keep plaza.
        rewrite(cfg, cameras=[PLAZA, GATE])
        t_hup = time.monotonic()
        daemon.send(signal.SIGHUP)
        assert wait_count(daemon, "reload: applied (2 cameras)", 1), daemon.stderr()
        t_applied = time.monotonic()
        assert publishing("gate", t_hup), daemon.stderr()
        assert publishing("plaza", t_applied)
        settled = t_applied + 1.0  # frames of street already in flight may still arrive
        log.wait(lambda: bool(log.health(settled)), timeout=5)
        assert not log.detections("street", settled)
        assert {c.id for c in log.health(settled)[-1].cameras} == {"plaza", "gate"}
        assert log.detections("gate")[0].seq == 0
        assert "reload: stopping camera plaza" not in daemon.stderr()
        plaza = log.detections("plaza")
        # Unchanged camera: the same capture kept running, so neither seq nor frame restarted.
        assert [m.seq for m in plaza] == list(range(plaza[0].seq, plaza[0].seq + len(plaza)))
        frames = [m.frame for m in plaza]
        assert frames == sorted(frames) and len(set(frames)) == len(frames)

        # 2. A broken config is refused with the reason; the old one keeps running.
        good = cfg.read_text()
        cfg.write_text(good.replace("mode: replay", "mdoe: replay", 1))
        daemon.send(signal.SIGHUP)
        assert wait_count(daemon, "reload refused", 1), daemon.stderr()
        refused = [ln for ln in daemon.stderr().splitlines() if "reload refused" in ln]
        assert "cameras[0].mdoe: unknown key" in refused[0], refused
        t_refused = time.monotonic()
        assert publishing("plaza", t_refused) and publishing("gate", t_refused)

        # 3. A new model needs a restart: refused, saying so.
        cfg.write_text(good)
        rewrite(cfg, model=str(tmp_path / "another-model"))
        daemon.send(signal.SIGHUP)
        assert wait_count(daemon, "reload refused", 2), daemon.stderr()
        refused = [ln for ln in daemon.stderr().splitlines() if "reload refused" in ln]
        assert "model changed" in refused[1] and "needs a restart" in refused[1], refused
        t_refused = time.monotonic()
        assert publishing("plaza", t_refused) and publishing("gate", t_refused)
        assert "reload: applied" not in daemon.stderr().split(refused[0])[1]

        # Each reload said RELOADING=1 and then READY=1 again (the refused ones too).
        reloads = [m for m in rx.messages if "RELOADING" in m]
        assert len(reloads) == 3 and all("MONOTONIC_USEC" in m for m in reloads)
        for m in reloads:
            assert rx.wait_for("READY", timeout=0, since=m.t) is not None

        plaza = log.detections("plaza")
        assert [m.seq for m in plaza] == list(range(plaza[0].seq, plaza[0].seq + len(plaza)))
        assert log.missed == {}
        daemon.send(signal.SIGTERM)
        assert daemon.wait(TIMEOUT_STOP_SEC) == 0, daemon.stderr()
