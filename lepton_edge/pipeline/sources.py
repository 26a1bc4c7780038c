"""Camera sources: one capture thread per camera, reading with `cv2.VideoCapture`.

Modes:
- live: only the newest frame is kept (a one-slot mailbox): a slow model drops frames, it never
  falls behind the camera. A file in live mode is read at its own fps.
- bench: every frame, in order, as fast as the pipeline takes them (deterministic replays).
- replay: a file paced at its own fps, optionally looping, standing in for a live camera.

A live or replay source that fails or stalls (no fresh frame for `stall_timeout`) is released
and reopened with exponential backoff; the others keep running. A bench source fails once, with
the reason. Facts behind the RTSP handling are in RTSP-NOTES (timeouts only work as
constructor parameters; after a timeout `read()` can return held-back stale frames).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from lepton_edge.config import Camera
from lepton_edge.errors import SourceError
from lepton_edge.pipeline.camera_url import classify, diagnose, parse_target, redact_url, userinfo

__all__ = ["Frame", "Source", "SourceError", "SourceStats", "State", "classify",
           "configure_ffmpeg", "open_capture", "redact_url"]

log = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
FFMPEG_THREAD_SAFE_ENV = "OPENCV_FFMPEG_IS_THREAD_SAFE"
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"
AV_LOG_DEBUG = 48  # FFmpeg logs every URL it opens ("Opening 'rtsp://user:pw@...'") from here
PROBE_TIMEOUT_S = 2.0  # for diagnose() after a failed network open
_configured = False


class State(str, Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RETRYING = "retrying"
    FAILED = "failed"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame: `image` is HxWx3 uint8 BGR; `ts` epoch seconds at capture;
    `t_capture` the monotonic clock at capture; `index` counts frames of this source."""

    camera: str
    index: int
    image: np.ndarray
    ts: float
    t_capture: float
    read_ms: float


@dataclass(frozen=True)
class SourceStats:
    state: State
    frames: int
    dropped: int
    reconnects: int
    fps: float
    last_error: str | None


def configure_ffmpeg() -> None:
    """Process-wide OpenCV/FFmpeg settings for cameras; idempotent (`Source.start` calls it).

    - RTSP over TCP by default. Setting the options variable at all drops OpenCV's own
      TCP-first default, so a user's value must carry `rtsp_transport` itself.
    - Opens in parallel. OpenCV holds one process-wide lock for the whole of every FFmpeg open
      (cap_ffmpeg_impl.hpp; opencv/opencv#20114): a camera that accepts TCP and never answers
      blocked every other camera's open and reopen (a looping file camera included) for its
      whole `open_timeout`. FFmpeg >= 4 is thread-safe; OpenCV >= 4.8 drops that lock when
      OPENCV_FFMPEG_IS_THREAD_SAFE=1 (opencv/opencv#23601). An explicit user value wins.
    - OpenCV's own log at ERROR unless OPENCV_LOG_LEVEL is set: with the lock dropped OpenCV
      warns about it at every open (a looping file reopens each loop), and its other warnings
      (stream timeout, "can't be used to capture by name") repeat the reasons logged here.
    """
    global _configured
    os.environ.setdefault(FFMPEG_OPTIONS_ENV, "rtsp_transport;tcp")
    os.environ.setdefault(FFMPEG_THREAD_SAFE_ENV, "1")
    if _configured:
        return
    _configured = True
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if _opencv_version() < (4, 8):
        log.warning("OpenCV %s serialises FFmpeg opens: a camera that does not answer delays "
                    "every other camera's (re)open by up to its open_timeout; OpenCV >= 4.8 "
                    "opens in parallel", cv2.__version__)
    level = os.environ.get(FFMPEG_LOGLEVEL_ENV, "")
    if level.lstrip("-").isdigit() and int(level) >= AV_LOG_DEBUG:
        log.warning("%s=%s: FFmpeg prints camera URLs with their passwords to stdout at this "
                    "level; use 40 (verbose) or lower outside a debugging session",
                    FFMPEG_LOGLEVEL_ENV, level)


def _opencv_version() -> tuple[int, int]:
    major, minor, *_ = [*cv2.__version__.split("."), "0", "0"]
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else (0, 0)


def open_capture(url: str, cam: Camera) -> cv2.VideoCapture:
    """Open `url` with the right OpenCV backend and timeouts. Raises SourceError with the
    reason; never returns a capture that is not open."""
    kind = classify(url)
    if kind == "file":
        path = Path(url.removeprefix("file://"))
        if not path.exists():
            raise SourceError(f"{path}: video file not found")
        if not os.access(path, os.R_OK):
            raise SourceError(f"{path}: video file is not readable (permissions)")
        # one decoder thread, as for network streams: FFmpeg's frame threads cost more CPU in
        # hand-offs than they save at camera resolutions (CPU a frame read: vtest.avi 0.54 ms
        # against 0.79, bikes.mp4 0.50 against 0.62), and the cores are the inference streams'
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        why = "not a video OpenCV can decode (corrupt, truncated or unsupported codec)"
    elif kind == "device":
        target: int | str = int(url) if url.isdigit() else url
        if isinstance(target, str) and not Path(target).exists():
            raise SourceError(f"{url}: no such video device (unplugged?)")
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2)
        why = "the device exists but cannot be opened (busy, or not a capture device)"
    elif kind == "gstreamer":
        if not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SourceError(
                "this OpenCV build has no GStreamer support (PyPI's opencv-python-headless "
                "has none); on Jetson use JetPack's python3-opencv through a venv with "
                "--system-site-packages (deploy/JETSON.md)"
            )
        cap = cv2.VideoCapture(url, cv2.CAP_GSTREAMER)
        why = "GStreamer could not start the pipeline"
    else:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(cam.open_timeout * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cam.read_timeout * 1000),
                  cv2.CAP_PROP_N_THREADS, 1]
        try:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        except cv2.error as err:
            raise SourceError(redact_url(f"{url}: cannot open: OpenCV: {err}")) from err
        why = ""
    if not cap.isOpened():
        cap.release()
        if kind == "network":
            why = _network_failure(url, cam)
        raise SourceError(redact_url(f"{url}: cannot open: {why}"))
    return cap


def _network_failure(url: str, cam: Camera) -> str:
    """Why a network open failed: the server's own answer where it gives one (OpenCV says only
    that the open failed), else the usual suspects."""
    why = diagnose(url, min(cam.open_timeout, PROBE_TIMEOUT_S))
    if why is None:
        target = parse_target(url)
        if target is not None and target.scheme in ("rtsp", "http"):
            suspects = "the server answers and lets us in: not a stream, or an unsupported codec"
        else:  # a scheme diagnose() does not speak (or TLS, where it sends no credentials)
            suspects = "connection refused or nothing listening, wrong path, or not a stream"
        why = f"no stream within {cam.open_timeout:g} s ({suspects})"
    if any(c in (userinfo(url) or "") for c in "/?#"):
        why += "; a '/', '?' or '#' in the user name or password must be written %2F, %3F, %23"
    return why


class _Mailbox:
    """Frames handed from a capture thread to the pipeline. Live: capacity 1, the newest frame
    replaces an untaken one (counted as dropped). Bench: a short FIFO the producer waits on."""

    def __init__(self, capacity: int, keep_newest: bool, ready: threading.Condition) -> None:
        self._frames: deque[Frame] = deque()
        self._capacity = capacity
        self._keep_newest = keep_newest
        self._ready = ready
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        with self._ready:
            if self._keep_newest:
                if len(self._frames) >= self._capacity:
                    self._frames.popleft()
                    self.dropped += 1
            else:
                while len(self._frames) >= self._capacity:
                    if stop.is_set():
                        return False
                    self._ready.wait(0.1)
            self._frames.append(frame)
            self._ready.notify_all()
            return True

    def take(self) -> Frame | None:
        with self._ready:
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._ready.notify_all()  # a bench producer may be waiting for room
            return frame

    def __len__(self) -> int:
        return len(self._frames)


class Source:
    """One camera: a capture thread feeding a mailbox. `start()`, `take()`, `stop()`."""

    def __init__(self, cam: Camera, url: str, ready: threading.Condition) -> None:
        self.cam = cam
        self.id = cam.id
        self.url = url
        self.shown_url = redact_url(url)  # the only form of the URL that is logged or published
        self.kind = classify(url)
        bench = cam.mode == "bench"
        self._mailbox = _Mailbox(2 if bench else 1, keep_newest=not bench, ready=ready)
        self._ready = ready
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = State.CONNECTING
        self._frames = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._fps = 0.0
        self._last_frame_t: float | None = None
        # The next Frame.index. An attribute, not a local of the capture loop: a stream lost
        # mid-read raises out of _read_loop, and the count must survive the reconnect.
        self._index = 0
        self._warned: str | None = None  # a file's truncation, warned once, not every loop
        # The analyser's time-only check (a detect rate), asked in the capture thread before a
        # frame's pixels are retrieved: a frame it refuses costs its decode, not its colour
        # conversion, a copy, a mailbox hand-over and a wake-up of the pipeline. Set before
        # start(); `skipped` counts the frames it refused.
        self.prefilter: Callable[[float], bool] | None = None
        self.skipped = 0

    # ---------------------------------------------------------------- control

    def start(self) -> None:
        configure_ffmpeg()  # here, before any capture thread: setenv races a thread's getenv
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop capturing; frames already in the mailbox can still be taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._state not in (State.FAILED, State.FINISHED):
            self._state = State.STOPPED

    def take(self) -> Frame | None:
        return self._mailbox.take()

    @property
    def has_frame(self) -> bool:
        return len(self._mailbox) > 0

    @property
    def done(self) -> bool:
        """True when this source will never deliver another frame (and none is waiting)."""
        return self._state in (State.FAILED, State.FINISHED, State.STOPPED) and not self.has_frame

    @property
    def state(self) -> State:
        return self._state

    def stats(self) -> SourceStats:
        return SourceStats(self._state, self._frames, self._mailbox.dropped, self._reconnects,
                           self._fps, self._last_error)

    # ---------------------------------------------------------------- capture thread

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                cap = open_capture(self.url, self.cam)
            except SourceError as err:
                if not self._fail(str(err), attempt):
                    return
                attempt += 1
                continue
            delivered_before = self._frames
            try:
                self._set_state(State.CONNECTED)
                outcome = self._read_loop(cap)
            except SourceError as err:
                outcome = "lost"
                # A source that delivered frames before failing starts its backoff afresh.
                if self._frames > delivered_before:
                    attempt = 0
                if not self._fail(str(err), attempt):
                    return
                attempt += 1
            finally:
                cap.release()
            if outcome in ("finished", "stopped"):
                return

    def _fail(self, reason: str, attempt: int) -> bool:
        """Record a failure; back off and return True to retry, or False when final."""
        reason = redact_url(reason)  # a backend's message may quote the URL too
        self._last_error = reason
        if self.cam.mode == "bench":
            log.error("camera %s: %s", self.id, reason)
            self._set_state(State.FAILED)
            with self._ready:
                self._ready.notify_all()
            return False
        delay = min(self.cam.reconnect.max, self.cam.reconnect.initial * 2**attempt)
        delay *= random.uniform(0.9, 1.0)  # spread reconnect storms, never past the bound
        log.warning("camera %s: %s; retrying in %.1f s", self.id, reason, delay)
        self._reconnects += 1
        self._set_state(State.RETRYING)
        self._stop.wait(delay)
        return not self._stop.is_set()

    def _read_loop(self, cap: cv2.VideoCapture) -> str:
        """Read until the stream ends, fails or stalls. Returns the outcome: "loop" (reopen the
        file at once), "finished" or "stopped"; a lost or stalled stream raises SourceError."""
        mode = self.cam.mode
        paced = self.kind == "file" and mode in ("live", "replay")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        period = 1.0 / fps if paced and 0 < fps < 1000 else 0.0
        expected = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if self.kind == "file" else 0
        stale_after = 0.9 * self.cam.read_timeout
        read_in_file = 0
        t0 = time.monotonic()
        last_fresh = t0
        limit = self.cam.max_frames
        while not self._stop.is_set():
            if limit is not None and self._frames >= limit:
                self._set_state(State.FINISHED)
                with self._ready:
                    self._ready.notify_all()
                return "finished"
            t_start = time.monotonic()
            prefilter = self.prefilter
            try:
                if prefilter is None:
                    ok, image = cap.read()
                else:  # the pixels are retrieved only for a frame the analyser wants
                    ok, image = cap.grab(), None
            except cv2.error as err:  # a decoder assertion: retried like a lost stream
                raise SourceError(f"{self.shown_url}: read failed: OpenCV: {err}") from err
            t_done = time.monotonic()
            if not ok or (prefilter is None and image is None):
                if self.kind == "file":
                    return self._end_of_file(read_in_file, expected)
                if self.kind == "network" and t_done - last_fresh >= stale_after:
                    # The server is up but sends nothing: reads time out (RTSP-NOTES), then
                    # fail. Say so, rather than "read failed", so a stall is told from a drop.
                    raise SourceError(f"{self.shown_url}: stalled: no fresh frame for "
                                      f"{t_done - last_fresh:.1f} s (read timed out)")
                raise SourceError(f"{self.shown_url}: stream ended or read failed")
            read_in_file += 1
            if self.kind == "network" and t_done - t_start >= stale_after:
                # A frame the decoder held back through a timeout, not a fresh one.
                if t_done - last_fresh > self.cam.stall_timeout:
                    raise SourceError(f"{self.shown_url}: stalled: no fresh frame for "
                                      f"{t_done - last_fresh:.1f} s")
                continue
            last_fresh = t_done
            if period:
                due = t0 + read_in_file * period
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
            t_capture = time.monotonic()
            read_ms = (t_done - t_start) * 1000.0
            if prefilter is not None:
                if not prefilter(t_capture):
                    # skipped before its pixels were converted, and nobody woken for it
                    self._count(t_capture)
                    self._index += 1
                    self.skipped += 1
                    continue
                t_retrieve = time.monotonic()
                try:
                    ok, image = cap.retrieve()
                except cv2.error as err:
                    raise SourceError(f"{self.shown_url}: read failed: OpenCV: {err}") from err
                if not ok or image is None:
                    raise SourceError(f"{self.shown_url}: read failed: a grabbed frame could "
                                      f"not be decoded")
                read_ms += (time.monotonic() - t_retrieve) * 1000.0
            frame = Frame(self.id, self._index, image, time.time(), t_capture, read_ms)
            if not self._mailbox.put(frame, self._stop):
                break
            self._count(frame.t_capture)
            self._index += 1
        return "stopped"

    def _end_of_file(self, read: int, expected: int) -> str:
        if read == 0:
            raise SourceError(f"{self.shown_url}: no frame could be decoded (corrupt file or "
                              f"unsupported codec)")
        if expected and read < expected - 1:
            self._last_error = (f"{self.shown_url}: ended after {read} of {expected} frames "
                                f"(truncated file?)")
            # A looping file ends the same way every loop: say it once, not once a loop.
            level = logging.DEBUG if self._last_error == self._warned else logging.WARNING
            log.log(level, "camera %s: %s", self.id, self._last_error)
            self._warned = self._last_error
        if self.cam.mode == "live" or self.cam.loop:
            return "loop"  # a file standing in for a camera: reopened at once, indices go on
        self._set_state(State.FINISHED)
        with self._ready:
            self._ready.notify_all()
        return "finished"

    def _count(self, t: float) -> None:
        self._frames += 1
        if self._last_frame_t is not None:
            dt = max(t - self._last_frame_t, 1e-6)
            inst = 1.0 / dt
            self._fps = inst if self._fps == 0 else 0.9 * self._fps + 0.1 * inst
        self._last_frame_t = t

    def _set_state(self, state: State) -> None:
        if state != self._state:
            log.info("camera %s: %s", self.id, state.value)
            self._state = state
