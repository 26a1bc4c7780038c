"""Fault: inference hangs (a wedged GPU driver, a deadlocked runtime). The inference thread
blocks inside the backend (tests/support/hang_backend.py: the real ONNX Runtime backend until
a flag file appears), while capture, publishing, health and STATUS go on. WATCHDOG=1 must
stop, so systemd's WatchdogSec= restarts the service; a camera that merely delivers nothing
keeps feeding it (tests/service/test_service.py).

For the fault table, the test prints how long before the hang the last WATCHDOG=1 came; systemd
kills the daemon WatchdogSec after that ping."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tests.conftest import VTEST, write_config
from tests.support.hang_backend import FLAG_ENV
from tests.support.message_log import MessageLog
from tests.support.notify_listener import NotifyListener

WATCHDOG_SEC = 1.0  # the daemon pings every 0.5 s


def test_a_hung_inference_stops_the_watchdog(tmp_path: Path, start_daemon,
                                             record_property) -> None:
    flag = tmp_path / "hang"
    hung = Path(f"{flag}.hung")
    cfg = write_config(tmp_path / "c.yaml", input_size=320,
                       backend="tests.support.hang_backend:HangBackend",
                       cameras=[{"id": "plaza", "url": str(VTEST), "mode": "replay",
                                 "loop": True}])
    endpoint = yaml.safe_load(cfg.read_text())["publish"]["endpoint"]
    with NotifyListener(tmp_path) as rx, MessageLog(endpoint) as log:
        env = {**rx.env(watchdog_usec=int(WATCHDOG_SEC * 1e6)), FLAG_ENV: str(flag)}
        daemon = start_daemon(cfg, env=env)
        ready = rx.wait_for("READY", timeout=60)
        assert ready is not None, daemon.stderr()
        healthy = rx.wait_for("WATCHDOG", timeout=5, since=ready.t + 1.0)
        assert healthy is not None, rx.messages

        flag.touch()
        assert log.wait(hung.exists, timeout=10), daemon.stderr()
        t_hang = float(hung.read_text())  # CLOCK_MONOTONIC in the daemon, same clock here
        time.sleep(3 * WATCHDOG_SEC)  # six ping intervals

        assert daemon.proc.poll() is None, "hung, not crashed: " + daemon.stderr()
        assert rx.times("WATCHDOG", since=t_hang) == [], "a hung inference thread fed it"
        last = max(rx.times("WATCHDOG"))
        lead = t_hang - last
        print(f"\nlast WATCHDOG=1 came {lead * 1000:.0f} ms before the hang; with "
              f"WatchdogSec={WATCHDOG_SEC:g} systemd acts {(WATCHDOG_SEC - lead) * 1000:.0f} ms "
              f"after it")
        record_property("last_watchdog_before_hang_ms", round(lead * 1000))
        assert 0 <= lead < WATCHDOG_SEC
        # Everything but inference is alive: health still flows, with publishing stalled.
        recent = log.health(since=t_hang + 1.0)
        assert len(recent) >= 2, daemon.stderr()
        assert recent[0].cameras[0].published == recent[-1].cameras[0].published
        assert recent[-1].cameras[0].frames > recent[0].cameras[0].frames
        daemon.proc.kill()  # what systemd does once the watchdog expires (SIGABRT, SIGKILL)
