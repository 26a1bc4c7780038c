"""The RTSP server stays up but stops sending frames (session alive, no RTP).

Pass criterion: the stall is detected (health: retrying; the log says `stalled: no fresh frame`)
within stall_timeout + read_timeout + margin; after the stream resumes the camera is reopened and
publishes again within reconnect.max + open_timeout + margin; the file camera never pauses; no
held-back stale frame is published as if it were new (the RTSP camera's capture times stay
ordered and no frame arrives with a capture time inside the stall).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.rtsp import RtspServer
from tests.faults.test_rtsp_reconnect import ENV, PAUSE_S, RTSP_CAMERA, rtsp_config
from tests.faults.watch import Watch, max_gap, row

pytestmark = pytest.mark.rtsp

STALL_S = 5.0


def test_stall_detected_and_camera_reopened(tmp_path: Path, rtsp_server: RtspServer,
                                            start_daemon) -> None:
    daemon = start_daemon(rtsp_config(tmp_path, rtsp_server.url), env=ENV)
    with Watch(daemon.endpoint) as w:
        w.until(lambda: w.count("door") >= 10 and w.count("plaza") >= 10, 60,
                what="both cameras publishing")
        rtsp_server.stall()
        t_stall, wall_stall = time.monotonic(), time.time()
        detect_bound = RTSP_CAMERA["stall_timeout"] + RTSP_CAMERA["read_timeout"] + 3.0
        t_detect = w.until(lambda: w.state("door") == "retrying", detect_bound + 10,
                           what="door retrying during the stall")
        w.pump(max(0.0, STALL_S - (time.monotonic() - t_stall)))
        rtsp_server.resume()
        t_resume, wall_resume = time.monotonic(), time.time()
        bound = RTSP_CAMERA["reconnect"]["max"] + 2 * RTSP_CAMERA["open_timeout"] + 3.0
        t_back = w.until(lambda: any(m.ts > wall_resume for m in w.dets("door", t_resume)),
                         bound + 10, what="a fresh door frame after resume")
        w.until(lambda: w.count("door", since=t_back) >= 10 and w.state("door") == "connected",
                20, what="door flowing again")
    detection = t_detect - t_stall
    recovery = t_back - t_resume
    door = w.dets("door")
    cam = w.camera("door")
    assert cam is not None
    in_stall = [m for m in door if wall_stall + 0.5 < m.ts < wall_resume]
    stamps = [m.ts for m in door]
    plaza_gap = max_gap([m.ts for m in w.dets("plaza")])
    fresh_before = [m for m in door if m.ts <= wall_stall + 0.5]
    after = [m for m in door if m.ts > wall_resume]
    lost = round((after[0].ts - fresh_before[-1].ts) * 10) - 1
    print(f"\nstall->detected {detection:.2f} s, resume->first fresh frame {recovery:.2f} s, "
          f"stale frames published in the stall {len(in_stall)}, plaza max gap "
          f"{plaza_gap:.2f} s, states {w.states('door')}, reconnects {cam.reconnects}, "
          f"last_error {cam.last_error!r}")
    passed = detection < detect_bound and recovery < bound and plaza_gap < PAUSE_S
    row("RTSP stall 5 s (server up, no RTP)", recovery, lost, passed)
    assert detection < detect_bound, f"stall noticed after {detection:.1f} s"
    assert recovery < bound, f"fresh frames {recovery:.1f} s after resume (bound {bound} s)"
    assert plaza_gap < PAUSE_S, f"the file camera paused {plaza_gap:.1f} s during the stall"
    assert not in_stall, f"{len(in_stall)} frames published with capture times in the stall"
    assert stamps == sorted(stamps)
    assert cam.reconnects >= 1
    assert cam.last_error and ("stalled" in cam.last_error or "read failed" in cam.last_error
                               or "cannot open" in cam.last_error), cam.last_error
    assert "stalled: no fresh frame for" in daemon.stderr()
    assert daemon.stop() == 0, daemon.stderr()
