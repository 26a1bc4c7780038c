"""The RTSP server is killed mid-stream (a camera losing power) and restarted.

Pass criterion: the daemon reconnects within the backoff bound (reconnect.max + open time +
margin) of the restart; the other camera never pauses (no gap in its capture times beyond
PAUSE_S); the RTSP camera's seq continues without a gap or reset; health shows
connected -> retrying -> connected with the reconnects counted and the error named.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import VTEST, write_config
from tests.faults.rtsp import CAPTURE_OPTIONS, RtspServer
from tests.faults.watch import Watch, max_gap, row

pytestmark = pytest.mark.rtsp

OUTAGE_S = 4.0
PAUSE_S = 2.0  # the file camera runs at 10 fps: a 2 s hole would be a pause, not noise
RTSP_CAMERA = {"mode": "live", "stall_timeout": 2, "open_timeout": 2, "read_timeout": 1,
               "reconnect": {"initial": 0.2, "max": 2}}
ENV = {"OPENCV_FFMPEG_CAPTURE_OPTIONS": CAPTURE_OPTIONS}


def rtsp_config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "door", "url": url, **RTSP_CAMERA},
        {"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}])


def test_server_killed_and_restarted(tmp_path: Path, rtsp_server: RtspServer,
                                     start_daemon) -> None:
    daemon = start_daemon(rtsp_config(tmp_path, rtsp_server.url), env=ENV)
    with Watch(daemon.endpoint) as w:
        w.until(lambda: w.count("door") >= 10 and w.count("plaza") >= 10, 60,
                what="both cameras publishing")
        rtsp_server.kill()
        t_kill = time.monotonic()
        w.until(lambda: w.state("door") == "retrying", 10, what="door retrying after the kill")
        t_noticed = time.monotonic()
        w.pump(max(0.0, OUTAGE_S - (t_noticed - t_kill)))
        rtsp_server.restart()
        t_restart = time.monotonic()
        bound = RTSP_CAMERA["reconnect"]["max"] + RTSP_CAMERA["open_timeout"] + 3.0
        t_back = w.until(lambda: w.count("door", since=t_restart) >= 1, bound + 10,
                         what="a door frame after the restart")
        w.until(lambda: w.count("door", since=t_restart) >= 10
                and w.state("door") == "connected", 20, what="door flowing again")
        w.pump(1.0)  # one more health message with the final counters
    recovery = t_back - t_restart
    door = w.dets("door")
    plaza = w.dets("plaza")
    seqs = [m.seq for m in door]
    frames = [m.frame for m in door]
    before = [m for m in door if m.ts < time.time() - (time.monotonic() - t_kill)]
    hole_s = door[len(before)].ts - before[-1].ts if before else float("nan")
    lost = round(hole_s * 10) - 1  # the server's 10 fps
    plaza_gap = max_gap([m.ts for m in plaza])
    cam = w.camera("door")
    assert cam is not None
    print(f"\nkill->noticed {t_noticed - t_kill:.2f} s, restart->first frame {recovery:.2f} s,"
          f" door frames lost {lost}, plaza max capture gap {plaza_gap:.2f} s,"
          f" door states {w.states('door')}, reconnects {cam.reconnects},"
          f" last_error {cam.last_error!r}")
    passed = recovery < bound and plaza_gap < PAUSE_S
    row("RTSP server killed 4 s, restarted", recovery, lost, passed)
    assert recovery < bound, f"reconnected {recovery:.1f} s after the restart (bound {bound} s)"
    assert plaza_gap < PAUSE_S, f"the file camera paused {plaza_gap:.1f} s during the outage"
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "door seq has a gap or a reset"
    assert frames == sorted(frames) and len(set(frames)) == len(frames)
    assert w.missed.get("door", 0) == 0 and w.missed.get("plaza", 0) == 0
    states = w.states("door")
    assert "retrying" in states and states[-1] == "connected", states
    assert states.index("connected") < states.index("retrying")
    assert cam.reconnects >= 1
    assert cam.last_error and rtsp_server.url in cam.last_error
    assert daemon.stop() == 0, daemon.stderr()
    assert "Traceback" not in daemon.stderr()
