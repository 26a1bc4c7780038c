"""The inference pipeline: sources -> letterbox -> backend -> decode -> publish.

Three threads besides the capture threads, data flowing one way:
- the prepare thread takes the next frame round-robin across cameras and letterboxes it into a
  ring of reused buffers (or leaves the raw frame to a backend that letterboxes on its device),
  handing one prepared frame at a time to inference, so preprocessing overlaps inference;
- the inference thread keeps up to `backend.max_in_flight` batches running and completes them
  in submission order, so each camera's frames stay in order;
- the publishing thread decodes, publishes, records, and sends `health` every interval.
The inference loop calls `on_heartbeat` every iteration, including idle ones, so a camera that
delivers nothing is not a hang, while a backend that blocks stops the heartbeat (and with it the
systemd watchdog). A full publishing queue blocks inference without a heartbeat, too.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .backends.base import Backend, ImageInputBackend, InferenceHandle
from .decode import DecodeSettings, get_decoder
from .detections import Detections
from .messages import (
    DET_PREFIX,
    HEALTH_TOPIC,
    CameraHealth,
    HealthMessage,
    detections_payload,
    health_payload,
)
from .preprocess import Letterbox, LetterboxPlan, plan_letterbox
from .publish import Publisher
from .sources import Frame, Source, State

log = logging.getLogger(__name__)

STAGES = ("capture", "preprocess", "infer", "decode", "publish", "capture_to_publish")


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
        return None


_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Hand freed heap back to the OS (glibc). Every frame allocates and frees megabytes in
    several threads; glibc keeps such memory in per-thread arenas, and the resident size of a
    long-running daemon creeps up in steps although Python's own heap stays flat."""
    if _TRIM is not None:
        _TRIM(0)


@dataclass(frozen=True)
class PipelineSettings:
    model_name: str
    precision: str
    family: str
    labels: tuple[str, ...]
    decode: DecodeSettings
    input_size: int = 640
    stride: int = 32
    fixed_hw: tuple[int, int] | None = None
    health_interval: float = 1.0
    exit_when_done: bool = False  # end when every source finished (bench / one-shot replay)


@dataclass
class Result:
    """One inferred frame on its way to the publishing thread."""

    frame: Frame
    plan: LetterboxPlan
    output: np.ndarray
    timings: dict[str, float]


@dataclass
class _Shape:
    plan: LetterboxPlan
    box: Letterbox | None
    ring: list[np.ndarray]
    pos: int = 0


@dataclass
class _Prepared:
    frame: Frame
    plan: LetterboxPlan
    tensor: np.ndarray | None  # None: the backend letterboxes the raw frame itself
    preprocess_ms: float


@dataclass
class _Job:
    frame: Frame
    plan: LetterboxPlan
    handle: InferenceHandle
    preprocess_ms: float
    t_submit: float


class LatencyRecorder:
    """Per-stage latencies (ms) in bounded rings, for p50/p99 in health, metrics and bench."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._rings: dict[str, deque[float]] = {s: deque(maxlen=size) for s in STAGES}

    def add(self, timings: dict[str, float]) -> None:
        for k, v in timings.items():
            ring = self._rings.get(k)
            if ring is None:  # not setdefault: that would build a deque per call
                ring = self._rings[k] = deque(maxlen=self._size)
            ring.append(v)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, ring in self._rings.items():
            if ring:
                arr = np.fromiter(ring, float, len(ring))
                p50, p99 = np.percentile(arr, [50, 99])
                out[k] = {"p50": float(p50), "p99": float(p99), "mean": float(arr.mean()),
                          "n": len(arr)}
        return out


@dataclass
class _CameraCounters:
    seq: int = 0
    published: int = 0
    detections: dict[int, int] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        backend: Backend,
        publisher: Publisher,
        settings: PipelineSettings,
        *,
        on_heartbeat: Callable[[], None] | None = None,
        on_result: Callable[[Frame, Detections, bytes], None] | None = None,
    ) -> None:
        self.backend = backend
        self.publisher = publisher
        self.settings = settings
        self._decode = get_decoder(settings.family)
        self._decode_settings = settings.decode
        self._on_heartbeat = on_heartbeat or (lambda: None)
        self._on_result = on_result
        self._ready = threading.Condition()
        self._sources: dict[str, Source] = {}
        self._rr = 0
        self._shapes: dict[tuple[int, int], _Shape] = {}  # by source (width, height)
        self._handoff: queue.Queue[_Prepared | None] = queue.Queue(maxsize=1)
        self._post: queue.Queue[Result | None] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._stopped: bool | None = None
        self._threads: list[threading.Thread] = []
        self.latency = LatencyRecorder()
        self.counters: dict[str, _CameraCounters] = {}
        self.first_result = threading.Event()
        self.finished = threading.Event()
        self.started_at = time.monotonic()
        self.published_frames = 0
        self._dt = 0.0  # smoothed interval between published frames
        self._last_pub_t: float | None = None
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ sources

    @property
    def condition(self) -> threading.Condition:
        return self._ready

    def add_source(self, source: Source) -> None:
        with self._ready:
            self._sources[source.id] = source
            self.counters.setdefault(source.id, _CameraCounters())
        source.start()

    def remove_source(self, camera_id: str) -> None:
        with self._ready:
            source = self._sources.pop(camera_id, None)
        if source is not None:
            source.stop()

    def sources(self) -> list[Source]:
        with self._ready:
            return list(self._sources.values())

    def set_decode_settings(self, settings: DecodeSettings) -> None:
        self._decode_settings = settings  # read once per frame by the publishing thread

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._threads = [
            threading.Thread(target=self._guard(self._post_loop), name="publish", daemon=True),
            threading.Thread(target=self._guard(self._prepare_loop), name="prepare", daemon=True),
            threading.Thread(target=self._guard(self._infer_loop), name="inference", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop capture, finish the frames already taken or waiting, publish them, and end.
        Returns False when the threads did not finish in time (a hung backend); a second call
        returns at once with the first one's answer."""
        if self._stopped is not None:
            return self._stopped
        for s in self.sources():
            s.stop()
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        self._stopped = self.join(timeout)
        if not self._stopped:
            alive = ", ".join(t.name for t in self._threads if t.is_alive())
            log.error("pipeline did not finish within %.0f s (%s still running: hung backend?); "
                      "exiting without draining", timeout, alive)
        return self._stopped

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as err:  # recorded and re-raised by the daemon, never lost
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self.error = err
                self._stop.set()
                self.finished.set()
        return run

    # ------------------------------------------------------------------ inference thread

    def _next_frame(self) -> Frame | None:
        with self._ready:
            srcs = list(self._sources.values())
            for k in range(len(srcs)):
                frame = srcs[(self._rr + k) % len(srcs)].take()
                if frame is not None:
                    self._rr = (self._rr + k + 1) % len(srcs)
                    return frame
            if not self._stop.is_set():
                self._ready.wait(0.1)
        return None

    def _all_done(self) -> bool:
        srcs = self.sources()
        return bool(srcs) and all(s.done for s in srcs)

    def _shape_for(self, frame: Frame, on_device: bool) -> _Shape:
        """The letterbox of this frame size, planned once: its plan and, unless the backend
        letterboxes on its own device, the Letterbox and its ring of reused buffers."""
        h, w = frame.image.shape[:2]
        shape = self._shapes.get((w, h))
        if shape is None:
            plan = plan_letterbox(w, h, self.settings.input_size, stride=self.settings.stride,
                                  fixed=self.settings.fixed_hw)
            spec = self.backend.input
            box = None if on_device else Letterbox(plan, spec.dtype, spec.layout)
            # In use at once: max_in_flight submitted, one in the handoff, one being written.
            ring = [] if box is None else [box.new_buffer()
                                           for _ in range(self.backend.max_in_flight + 2)]
            shape = self._shapes[(w, h)] = _Shape(plan, box, ring)
            log.info("camera %s: %dx%d letterboxed to %dx%d", frame.camera, w, h,
                     plan.dst_w, plan.dst_h)
        return shape

    def _prepare_loop(self) -> None:
        """Takes frames round-robin and letterboxes them, overlapping the running inference."""
        on_device = isinstance(self.backend, ImageInputBackend)
        while True:
            frame = self._next_frame()
            if frame is None:
                ending = self._stop.is_set() or (self.settings.exit_when_done and self._all_done())
                if ending and not any(s.has_frame for s in self.sources()):
                    break
                continue
            t0 = time.perf_counter()
            shape = self._shape_for(frame, on_device)
            buf = None  # None: the backend letterboxes the raw frame on its own device
            if shape.box is not None:
                buf = shape.ring[shape.pos]
                shape.pos = (shape.pos + 1) % len(shape.ring)
                shape.box(frame.image, buf[0])
            prepared = _Prepared(frame, shape.plan, buf, (time.perf_counter() - t0) * 1000.0)
            self._handoff_put(prepared)
        self._handoff_put(None)

    def _handoff_put(self, item: _Prepared | None) -> None:
        while True:
            try:
                self._handoff.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._threads[2].is_alive():
                    return

    def _infer_loop(self) -> None:
        backend = self.backend
        pending: deque[_Job] = deque()
        while True:
            try:
                item = self._handoff.get(timeout=0.1)
            except queue.Empty:
                self._on_heartbeat()  # idle (no camera delivers) is not a hang
                if pending:
                    self._complete(pending.popleft())
                continue
            self._on_heartbeat()
            if item is None:
                break
            t1 = time.perf_counter()
            if item.tensor is None:
                handle = backend.submit_image(item.frame.image, item.plan)  # type: ignore[attr-defined]
            else:
                handle = backend.submit(item.tensor)
            pending.append(_Job(item.frame, item.plan, handle, item.preprocess_ms, t1))
            while len(pending) >= backend.max_in_flight:
                self._complete(pending.popleft())
        while pending:
            self._complete(pending.popleft())
        self._put(None)

    def _complete(self, job: _Job) -> None:
        outputs = job.handle.wait()
        infer_ms = (time.perf_counter() - job.t_submit) * 1000.0
        output = outputs[0][0]  # batch of one: (4 + C, N)
        self._put(Result(job.frame, job.plan, output,
                         {"capture": job.frame.read_ms, "preprocess": job.preprocess_ms,
                          "infer": infer_ms}))

    def _put(self, item: Result | None) -> None:
        # Blocks while publishing is stuck, and deliberately sends no heartbeat meanwhile.
        while True:
            try:
                self._post.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set() and item is not None and not self._post_alive():
                    return

    def _post_alive(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    # ------------------------------------------------------------------ publishing thread

    def _post_loop(self) -> None:
        interval = self.settings.health_interval
        next_health = time.monotonic()
        self._publish_health("starting")
        while True:
            now = time.monotonic()
            if now >= next_health:
                self.publisher.poll_subscriptions()
                self._publish_health("running")
                release_free_heap()
                next_health = now + interval
            try:
                item = self._post.get(timeout=max(0.01, next_health - time.monotonic()))
            except queue.Empty:
                continue
            if item is None:
                break
            self._publish_result(item)
        self.publisher.poll_subscriptions()
        self._publish_health("stopping")
        self.finished.set()

    def _publish_result(self, r: Result) -> None:
        t0 = time.perf_counter()
        dets = self._decode(r.output, r.plan, self._decode_settings)
        t1 = time.perf_counter()
        cam = r.frame.camera
        counters = self.counters.setdefault(cam, _CameraCounters())
        timings = dict(r.timings)
        timings["decode"] = (t1 - t0) * 1000.0
        timings["capture_to_publish"] = (time.monotonic() - r.frame.t_capture) * 1000.0
        h, w = r.frame.image.shape[:2]
        payload = detections_payload(
            camera=cam, seq=counters.seq, frame=r.frame.index, ts=r.frame.ts, width=w, height=h,
            model=self.settings.model_name, precision=self.settings.precision,
            latency_ms=timings, detections=dets, labels=self.settings.labels,
        )
        self.publisher.send(DET_PREFIX + cam, payload)
        timings["publish"] = (time.perf_counter() - t1) * 1000.0
        counters.seq += 1
        counters.published += 1
        for c in dets.class_id.tolist():
            counters.detections[c] = counters.detections.get(c, 0) + 1
        self.latency.add(timings)
        self.published_frames += 1
        now = time.monotonic()
        if self._last_pub_t is not None:
            # Average the interval, not its inverse: 1/dt of jittery frames overstates fps.
            dt = now - self._last_pub_t
            self._dt = dt if self._dt == 0 else 0.95 * self._dt + 0.05 * dt
        self._last_pub_t = now
        if self._on_result is not None:
            self._on_result(r.frame, dets, payload)
        self.first_result.set()

    @property
    def fps(self) -> float:
        return 1.0 / self._dt if self._dt > 0 else 0.0

    @property
    def active_seconds(self) -> float:
        """Seconds from the start to the last published frame (the run's working time)."""
        return ((self._last_pub_t or time.monotonic()) - self.started_at)

    def health(self, state: str) -> HealthMessage:
        cams = []
        for s in self.sources():
            st = s.stats()
            c = self.counters.get(s.id, _CameraCounters())
            cams.append(CameraHealth(id=s.id, state=st.state.value, fps=st.fps, frames=st.frames,
                                     dropped=st.dropped, reconnects=st.reconnects,
                                     published=c.published, last_error=st.last_error))
        return HealthMessage(ts=time.time(), state=state,
                             uptime_s=time.monotonic() - self.started_at, fps=self.fps,
                             subscribers=self.publisher.subscriptions, cameras=tuple(cams))

    def _publish_health(self, state: str) -> None:
        self.publisher.send(HEALTH_TOPIC, health_payload(self.health(state)))

    def camera_states(self) -> dict[str, State]:
        return {s.id: s.state for s in self.sources()}
