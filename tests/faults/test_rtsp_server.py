"""The RTSP test server behaves like a camera, seen through ``cv2.VideoCapture``."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.faults.rtsp import RtspServer, RtspServerError, rtsp_available

pytestmark = pytest.mark.rtsp

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 2000
FRAME_PERIOD_S = 0.1  # the server's 10 fps
GRACE_S = 0.5  # frames already encoded or in the socket when a fault starts


@contextmanager
def open_capture(url: str) -> Iterator[cv2.VideoCapture]:
    """An FFmpeg capture with open/read timeouts (they work only as constructor params)."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS,
        cv2.CAP_PROP_N_THREADS, 1,
    ]  # fmt: skip
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    try:
        yield capture
    finally:
        capture.release()


def read_timed(capture: cv2.VideoCapture) -> tuple[bool, np.ndarray | None, float]:
    """``read()`` plus how long it blocked, in seconds."""
    start = time.monotonic()
    ok, frame = capture.read()
    return ok, frame, time.monotonic() - start


def first_frame_delay(url: str) -> float:
    """Open ``url``, read one frame, return seconds from open to frame."""
    start = time.monotonic()
    with open_capture(url) as capture:
        ok, frame = capture.read()
        assert ok, f"no frame from {url}"
        assert frame.shape == (576, 768, 3)
    return time.monotonic() - start


def test_first_frame_is_768x576(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    assert rtsp_server.url == f"rtsp://127.0.0.1:{rtsp_server.port}/stream"
    assert first_frame_delay(rtsp_server.url) < 3.0


def test_frames_arrive_at_10_fps(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    with open_capture(rtsp_server.url) as capture:
        assert capture.read()[0]
        start = time.monotonic()
        for _ in range(10):
            assert capture.read()[0]
        elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 2.0, f"10 frames in {elapsed:.2f} s, expected about 1 s"


def test_stall_stops_fresh_frames(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    with open_capture(rtsp_server.url) as capture:
        for _ in range(3):
            assert capture.read()[0]
        rtsp_server.stall()
        stalled_at = time.monotonic()
        held_back = 0
        while True:
            ok, _, blocked = read_timed(capture)
            since_stall = time.monotonic() - stalled_at
            if not ok:
                break
            assert since_stall < 10.0, "read() still returns frames 10 s into a stall"
            if since_stall > GRACE_S:
                # A True after the grace period is a frame the decoder held back, released
                # only by the read timeout: it must have blocked, never arrived at frame rate.
                assert blocked > READ_TIMEOUT_MS / 1000 * 0.75, f"fresh frame {since_stall:.2f} s"
                held_back += 1
        assert held_back <= 3
        assert since_stall < 8.0
    rtsp_server.resume()
    assert first_frame_delay(rtsp_server.url) < 3.0


def test_short_stall_resumes_same_capture(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    with open_capture(rtsp_server.url) as capture:
        assert capture.read()[0]
        rtsp_server.stall()
        time.sleep(0.5)  # shorter than the read timeout: the capture survives
        rtsp_server.resume()
        for _ in range(5):
            ok, _, blocked = read_timed(capture)
            assert ok
            assert blocked < 1.5


def test_open_during_stall_times_out(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    rtsp_server.stall()
    start = time.monotonic()
    with open_capture(rtsp_server.url) as capture:
        opened = capture.isOpened() and capture.read()[0]
    assert not opened
    assert time.monotonic() - start < OPEN_TIMEOUT_MS / 1000 + 3


def test_kill_fails_read_quickly(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    with open_capture(rtsp_server.url) as capture:
        assert capture.read()[0]
        rtsp_server.kill()
        killed_at = time.monotonic()
        for _ in range(5):  # at most a frame or two already in the socket
            if not capture.read()[0]:
                break
        else:
            pytest.fail("read() kept returning frames after SIGKILL")
        assert time.monotonic() - killed_at < 1.0
    assert not rtsp_server.running


def test_restart_serves_same_url(rtsp_server: RtspServer, rtsp_capture_env: str) -> None:
    url = rtsp_server.url
    with open_capture(url) as capture:  # a live client: the killed socket lingers
        assert capture.read()[0]
        rtsp_server.kill()
        assert rtsp_server.restart() == url
    assert first_frame_delay(url) < 3.0


def test_file_loops_without_gaps(tmp_path: Path, rtsp_capture_env: str) -> None:
    available, reason = rtsp_available()
    if not available:
        pytest.skip(reason)
    clip = tmp_path / "ramp.avi"  # 1 s: brightness ramps up, then wraps when the file loops
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    rng = np.random.default_rng(0)
    for level in range(0, 200, 20):
        # Noise keeps frames large: FFmpeg's 32 KiB probe would wait seconds for tiny ones.
        writer.write((rng.integers(0, 50, (240, 320, 3)) + level).astype(np.uint8))
    writer.release()
    with RtspServer(clip) as server, open_capture(server.url) as capture:
        levels = []
        for _ in range(30):
            ok, frame, blocked = read_timed(capture)
            assert ok and frame is not None
            assert blocked < 3 * FRAME_PERIOD_S
            levels.append(float(frame.mean()))
    wraps = sum(1 for a, b in itertools.pairwise(levels) if b < a - 100)
    assert wraps >= 2, f"expected the 1 s clip to loop twice in 3 s, brightness: {levels}"


def test_bad_file_error_carries_stderr(tmp_path: Path) -> None:
    available, reason = rtsp_available()
    if not available:
        pytest.skip(reason)
    with pytest.raises(RtspServerError, match="does not exist"):
        RtspServer(tmp_path / "missing.avi").start()


def test_busy_port_is_an_error(rtsp_server: RtspServer) -> None:
    with pytest.raises(RtspServerError, match=f"cannot bind 127.0.0.1:{rtsp_server.port}"):
        RtspServer(rtsp_server.file, port=rtsp_server.port).start()
