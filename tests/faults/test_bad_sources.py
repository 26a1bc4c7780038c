"""Bad input: a truncated and a corrupt video file, an unplugged device path, an RTSP URL to a
loopback port where nothing listens.

Pass criterion: one clear error each (the same one-line reason on every retry, no traceback);
the live ones (device, RTSP, a file standing in for a camera) are retried with backoff and
health shows them retrying with the reason; a one-shot bench run reports the bad file and exits
4 after finishing the good ones; the good camera is unaffected (no gap over PAUSE_S).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.conftest import VTEST, free_port, run_cli, write_config
from tests.faults.watch import Watch, max_gap, row

PAUSE_S = 2.0
RETRY = {"open_timeout": 2, "read_timeout": 1, "stall_timeout": 2,
         "reconnect": {"initial": 0.2, "max": 1}}


def truncated_copy(path: Path, fraction: float) -> Path:
    data = VTEST.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def corrupt_file(path: Path) -> Path:
    path.write_bytes(b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(range(256)) * 64)
    return path


def reasons(stderr: str, camera: str) -> set[str]:
    """The distinct failure reasons the capture thread logged for `camera` (the retry delay
    stripped; the end-of-run summary is not a log line of lepton_edge.pipeline.sources)."""
    found = re.findall(rf"sources: camera {re.escape(camera)}: (.+?)(?:; retrying in [\d.]+ s)?$",
                       stderr, re.MULTILINE)
    states = {"connecting", "connected", "retrying", "failed", "finished", "stopped"}
    return {r for r in found if r not in states and "letterboxed" not in r}


def test_bench_run_reports_truncated_and_corrupt_files(tmp_path: Path) -> None:
    short = truncated_copy(tmp_path / "short.avi", 0.05)  # about 40 of 795 frames
    junk = corrupt_file(tmp_path / "junk.avi")
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "good", "url": str(VTEST), "mode": "bench", "max_frames": 30},
        {"id": "short", "url": str(short), "mode": "bench"},
        {"id": "junk", "url": str(junk), "mode": "bench"}])
    t0 = time.monotonic()
    result = run_cli("run", "--config", str(cfg), timeout=120)
    elapsed = time.monotonic() - t0
    err = result.stderr
    print(f"\nbench run with a truncated and a corrupt file: exit {result.returncode} in "
          f"{elapsed:.1f} s; short: {reasons(err, 'short')}; junk: {reasons(err, 'junk')}")
    passed = result.returncode == 4 and "camera good: 30 frames" in err
    row("truncated + corrupt file (bench)", None, "0 (good camera)", passed)
    assert result.returncode == 4, err
    assert "Traceback" not in err
    assert "camera good: 30 frames" in err and "FAILED" not in err.split("camera good:")[1][:40]
    short_reasons = reasons(err, "short")
    assert len(short_reasons) == 1 and "ended after" in next(iter(short_reasons))
    assert "of 795 frames (truncated file?)" in next(iter(short_reasons))
    junk_reasons = reasons(err, "junk")
    assert len(junk_reasons) == 1, junk_reasons
    assert re.search(r"junk\.avi: (cannot open|no frame could be decoded)",
                     next(iter(junk_reasons)))
    assert re.search(r"camera junk: \d+ frames, FAILED: .*junk\.avi", err)


def test_live_bad_sources_retry_and_the_good_camera_runs_on(tmp_path: Path,
                                                             start_daemon) -> None:
    junk = corrupt_file(tmp_path / "junk.avi")
    port = free_port()
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "good", "url": str(VTEST), "mode": "replay", "loop": True},
        {"id": "unplugged", "url": "/dev/video97", **RETRY},
        {"id": "nobody", "url": f"rtsp://127.0.0.1:{port}/stream", **RETRY},
        {"id": "junk", "url": str(junk), "mode": "replay", **RETRY}])
    daemon = start_daemon(cfg)
    bad = ("unplugged", "nobody", "junk")
    with Watch(daemon.endpoint) as w:
        w.until(lambda: w.count("good") >= 10, 60, what="the good camera publishing")
        w.until(lambda: all((c := w.camera(b)) is not None and c.reconnects >= 3 for b in bad),
                30, what="every bad camera retried 3 times")
        w.pump(2.0)
    err = daemon.stderr()
    gap = max_gap([m.ts for m in w.dets("good")])
    found = {b: reasons(err, b) for b in bad}
    cams = {b: w.camera(b) for b in bad}
    print(f"\ngood camera max gap {gap:.2f} s, {w.count('good')} frames; "
          + "; ".join(f"{b}: {c.state} x{c.reconnects} {found[b]}"  # type: ignore[union-attr]
                      for b, c in cams.items()))
    passed = gap < PAUSE_S and all(len(r) == 1 for r in found.values())
    row("unplugged device, dead RTSP port, corrupt file (live)", None, "0 (good camera)",
        passed)
    assert gap < PAUSE_S, f"the good camera paused {gap:.1f} s"
    assert w.missed.get("good", 0) == 0
    expected = {"unplugged": "/dev/video97: no such video device (unplugged?)",
                "nobody": f"rtsp://127.0.0.1:{port}/stream: cannot open",
                "junk": "junk.avi: "}
    for b in bad:
        cam = cams[b]
        assert cam is not None and cam.state in ("retrying", "connecting"), cam
        assert cam.published == 0 and cam.last_error and expected[b] in cam.last_error
        assert len(found[b]) == 1, f"{b}: several different errors: {found[b]}"
        assert expected[b] in next(iter(found[b]))
    assert "Traceback" not in err
    assert daemon.stop() == 0, err
