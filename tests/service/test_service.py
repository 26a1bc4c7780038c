"""The daemon under a real systemd notify socket: a datagram socket bound as $NOTIFY_SOCKET (a
path, and an abstract name), the daemon a real process. READY=1 once the model ran its warm-up
inference (a camera down at boot must not fail the start), WATCHDOG=1 at WatchdogSec/2 from
the inference loop, STATUS= with fps and camera states, STOPPING=1 at exit. A camera that
delivers nothing is not a hang, so the watchdog keeps being fed. The hang itself is
tests/faults/test_inference_hang.py."""

from __future__ import annotations

import itertools
import re
import signal
import statistics
from pathlib import Path

from tests.conftest import VTEST, free_port, write_config
from tests.support.notify_listener import NotifyListener


def replay_config(tmp_path: Path, **fields: object) -> Path:
    """vtest.avi paced at 10 fps and looped: a camera that never ends. A 320-pixel model keeps
    the CPU free for the other tests on a small machine."""
    cameras = [{"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}]
    return write_config(tmp_path / "c.yaml", input_size=320, cameras=cameras, **fields)


def intervals(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def test_ready_then_watchdog_at_its_cadence_then_status_and_stopping(
        tmp_path: Path, start_daemon) -> None:
    watchdog_sec = 2.0  # the daemon pings every WatchdogSec/2 = 1 s
    with NotifyListener(tmp_path) as rx:
        daemon = start_daemon(replay_config(tmp_path),
                              env=rx.env(watchdog_usec=int(watchdog_sec * 1e6)))
        ready = rx.wait_for("READY", timeout=60)
        assert ready is not None, daemon.stderr()
        assert daemon.wait_for_log("first frame published", timeout=30), daemon.stderr()
        # STATUS comes every 5 s: the one after READY carries the measured rate.
        status = rx.wait_for("STATUS", timeout=10, since=ready.t + 1.0)
        assert status is not None, daemon.stderr()
        match = re.fullmatch(r"(\d+\.\d) fps; plaza connected", status.fields["STATUS"])
        assert match, status.fields
        assert float(match.group(1)) > 0

        rx.wait_for("WATCHDOG", timeout=10, since=ready.t + 5.5)  # five intervals or more
        pings = rx.times("WATCHDOG", since=ready.t)
        gaps = intervals(pings)
        print(f"\nWATCHDOG every {statistics.median(gaps):.3f} s (median of {len(gaps)}), "
              f"min {min(gaps):.3f}, max {max(gaps):.3f}; WatchdogSec={watchdog_sec:g}")
        assert len(pings) >= 5, rx.messages
        # Rate-limited to WatchdogSec/2 (arrival jitter aside), and never close to WatchdogSec,
        # where systemd would kill a healthy daemon.
        assert min(gaps) >= 0.8, gaps
        assert statistics.median(gaps) <= 1.5, gaps
        assert max(gaps) < watchdog_sec, gaps

        daemon.send(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.stderr()
        stopping = rx.wait_for("STOPPING", timeout=2, value="1")
        assert stopping is not None, rx.messages
        assert [m for m in rx.messages if "READY" in m] == [ready]  # READY exactly once
        assert not rx.times("WATCHDOG", since=stopping.t)


def test_abstract_socket_gets_ready_watchdog_and_stopping(tmp_path: Path, start_daemon) -> None:
    with NotifyListener(tmp_path, abstract=True) as rx:
        assert rx.value.startswith("@")
        daemon = start_daemon(replay_config(tmp_path), env=rx.env(watchdog_usec=1_000_000))
        ready = rx.wait_for("READY", timeout=60)
        assert ready is not None, daemon.stderr()
        second = rx.wait_for("WATCHDOG", timeout=5, since=ready.t + 0.6)
        assert second is not None, rx.messages
        daemon.send(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.stderr()
        assert rx.wait_for("STOPPING", timeout=2) is not None, rx.messages


def test_a_camera_that_delivers_nothing_still_feeds_the_watchdog(
        tmp_path: Path, start_daemon) -> None:
    """Nothing listens on the camera's port: the source retries forever, no frame ever comes,
    yet the inference loop is alive, so WATCHDOG=1 keeps coming, and the service is READY (the
    model ran its warm-up): a camera down at boot must not fail the start."""
    dead = f"rtsp://127.0.0.1:{free_port()}/stream"
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "gate", "url": dead, "mode": "live", "open_timeout": 1.0,
         "reconnect": {"initial": 0.5, "max": 1.0}}])
    with NotifyListener(tmp_path) as rx:
        daemon = start_daemon(cfg, env=rx.env(watchdog_usec=1_000_000))
        first = rx.wait_for("WATCHDOG", timeout=60)
        assert first is not None, daemon.stderr()
        assert daemon.wait_for_log("camera gate: retrying", timeout=10), daemon.stderr()
        rx.wait_for("WATCHDOG", timeout=10, since=first.t + 3.0)
        pings = rx.times("WATCHDOG")
        print(f"\nno frames: {len(pings)} WATCHDOG in {pings[-1] - pings[0]:.2f} s, "
              f"max gap {max(intervals(pings)):.3f} s")
        assert len(pings) >= 6, rx.messages
        assert max(intervals(pings)) < 1.0, pings  # WatchdogSec=1 never ran out
        assert len(rx.times("READY")) == 1
        states = [m.fields["STATUS"] for m in rx.messages if "STATUS" in m]
        assert states and all(re.search(r"gate (connecting|retrying)$", s) for s in states)
        daemon.send(signal.SIGTERM)
        assert daemon.wait(20) == 0, daemon.stderr()
        assert rx.wait_for("STOPPING", timeout=2) is not None
