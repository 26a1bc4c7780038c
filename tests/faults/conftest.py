"""Fixtures for fault tests against a real RTSP server (``rtsp_server.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.rtsp import CAPTURE_OPTIONS, RtspServer, rtsp_available

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_VIDEO = REPO_ROOT / "samples" / "vtest.avi"  # 768x576, 10 fps


@pytest.fixture
def rtsp_server() -> Iterator[RtspServer]:
    """A running server looping ``samples/vtest.avi`` at 10 fps; skips with the reason if
    GStreamer's RTSP server is not installed. Stopped (SIGTERM) after the test."""
    available, reason = rtsp_available()
    if not available:
        pytest.skip(reason)
    if not SAMPLE_VIDEO.is_file():
        pytest.skip(f"sample video missing: {SAMPLE_VIDEO.relative_to(REPO_ROOT)}")
    with RtspServer(SAMPLE_VIDEO, fps=10) as server:
        yield server


@pytest.fixture
def rtsp_capture_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """Set ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` for fast RTSP opens over TCP; return its value.

    OpenCV reads the variable at each open, so it must be set before ``VideoCapture(url)``.
    """
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", CAPTURE_OPTIONS)
    return CAPTURE_OPTIONS
