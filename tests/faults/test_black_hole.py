"""A camera whose server accepts TCP and never answers (a black hole), next to a looping file
camera whose file is 1 s long, so the file camera opens its file again every second.

Pass criterion: the file camera's message rate and its largest gap between capture times are
the same with the black hole as before it: the black hole's opens (each its whole
open_timeout) delay no one else's open. The two phases run in one daemon: first the black
hole's port refuses connections (its opens fail at once), then it starts accepting.

Red on 5b6f079: OpenCV held one process-wide lock through every FFmpeg open, so the file
camera's reopen waited out the black hole's open_timeout once a loop.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import write_config
from tests.faults.watch import Watch, max_gap, row
from tests.support.camera_servers import BlackHole, short_clip

OPEN_TIMEOUT_S = 4.0
PHASE_S = 6.0
SILENT = {"open_timeout": OPEN_TIMEOUT_S, "read_timeout": 1, "stall_timeout": 2,
          "reconnect": {"initial": 0.2, "max": 0.5}}


def measure(w: Watch, camera: str, seconds: float) -> tuple[int, float]:
    """Messages of `camera` in the next `seconds`, and the largest gap between their capture
    times, counting from the last message before the phase and to its end (so a pause at
    either end counts)."""
    before = w.dets(camera)
    t0 = time.monotonic()
    w.pump(seconds)
    dets = w.dets(camera, since=t0)
    times = [m.ts for m in before[-1:] + dets] + [time.time()]
    return len(dets), max_gap(times)


def silent_error(w: Watch) -> str:
    cam = w.camera("silent")
    return (cam.last_error if cam else None) or ""


def test_a_black_hole_camera_does_not_slow_a_file_camera(tmp_path: Path, start_daemon) -> None:
    clip = short_clip(tmp_path / "clip.avi")  # 25 frames at 25 fps
    with BlackHole(listen=False) as hole:
        cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
            {"id": "loop", "url": str(clip), "mode": "replay", "loop": True},
            {"id": "silent", "url": hole.url, **SILENT}])
        daemon = start_daemon(cfg)
        with Watch(daemon.endpoint) as w:
            w.until(lambda: w.count("loop") >= 20, 60, what="the file camera publishing")
            alone, gap_alone = measure(w, "loop", PHASE_S)
            hole.listen()
            t_hole = time.monotonic()
            beside, gap_beside = measure(w, "loop", PHASE_S)
            attempts = len(hole.connections)
            # Its first open of the black hole ends after open_timeout + the diagnosis.
            w.until(lambda: "sent no RTSP answer" in silent_error(w), OPEN_TIMEOUT_S + 5,
                    fail=False)
            cam = w.camera("silent")
        err = daemon.stderr()
        assert daemon.stop() == 0, err
    ratio = beside / max(alone, 1)
    print(f"\nfile camera, {PHASE_S:g} s each: {alone} messages (max gap {gap_alone:.2f} s) "
          f"next to a refusing port, {beside} (max gap {gap_beside:.2f} s) next to a black "
          f"hole with a {OPEN_TIMEOUT_S:g} s open_timeout ({attempts} connections to it in "
          f"{time.monotonic() - t_hole:.1f} s); silent camera: {cam}")
    passed = ratio >= 0.6 and gap_beside < max(1.5, 2 * gap_alone)
    row("black-hole RTSP camera next to a looping file", None, f"{alone - beside} (file camera)",
        passed)
    assert attempts >= 2, "the silent camera did not open the black hole twice"
    assert ratio >= 0.6, f"the file camera fell from {alone} to {beside} messages"
    assert gap_beside < max(1.5, 2 * gap_alone), (
        f"the file camera paused {gap_beside:.2f} s next to the black hole "
        f"({gap_alone:.2f} s without)")
    assert cam is not None and cam.published == 0
    assert cam.last_error and "accepted the connection but sent no RTSP answer" in cam.last_error
    assert "Traceback" not in err
