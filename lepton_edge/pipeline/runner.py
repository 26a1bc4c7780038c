"""`Pipeline`: the stages on three threads besides the capture threads, data flowing one way.

- "prepare": the scheduler's next admitted frame, round-robin across cameras, letterboxed into
  a reused buffer and handed over one at a time, so preprocessing overlaps inference;
- "inference": keeps up to `backend.max_in_flight` batches running and completes them in
  submission order, so each camera's frames stay in order, decoding each from the runtime's
  own output buffers (no copy of the raw output); between frames it also serves one-off
  `detect()` requests (the HTTP detect endpoint);
- "emit": analyses, hands each result to the sinks, drains outcomes, and builds `health`
  every interval.
The inference loop calls `on_heartbeat` every iteration, including idle ones, so a camera that
delivers nothing is not a hang, while a backend that blocks stops the heartbeat (and with it
the systemd watchdog). A full hand-off to the emitting thread blocks inference without a
heartbeat, too. A stage that raises stops the pipeline and its error is kept in `error`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from lepton_edge.backends.base import Backend
from lepton_edge.detections import Detections
from lepton_edge.messages import CameraHealth, HealthMessage
from lepton_edge.pipeline.analyse import AnalyseStage
from lepton_edge.pipeline.decode import DecodeSettings
from lepton_edge.pipeline.decoding import DecodeStage
from lepton_edge.pipeline.emit import Emitter
from lepton_edge.pipeline.infer import Inferrer
from lepton_edge.pipeline.prepare import Job, Preparer
from lepton_edge.pipeline.preprocess import LetterboxPlan
from lepton_edge.pipeline.schedule import Scheduler
from lepton_edge.pipeline.sources import Source, State
from lepton_edge.pipeline.stats import RunStats
from lepton_edge.results import CameraAnalyser, FrameResult
from lepton_edge.sinks.base import Sink

log = logging.getLogger(__name__)


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
class _DetectRequest:
    """A one-off image (not a camera frame) to infer between frames; the caller decodes."""

    plan: LetterboxPlan
    tensor: np.ndarray | None
    image: np.ndarray
    future: Future[np.ndarray]


_WAKE = object()  # put on the emit queue so a queued outcome is sent at once


class Pipeline:
    def __init__(self, backend: Backend, sinks: Sequence[Sink], settings: PipelineSettings,
                 *, on_heartbeat: Callable[[], None] | None = None,
                 subscribers: Callable[[], int] = lambda: 0) -> None:
        self.backend = backend
        self.settings = settings
        self.stats = RunStats()
        self.scheduler = Scheduler(self.stats)
        self.preparer = Preparer(backend, settings.input_size, settings.stride, settings.fixed_hw)
        self.decoder = DecodeStage(settings.family, settings.decode)
        self.analyse = AnalyseStage(self.scheduler)
        self.emitter = Emitter(sinks, self.stats, model=settings.model_name,
                               precision=settings.precision)
        self.emitter.wake = self._wake
        self._subscribers = subscribers
        self._on_heartbeat = on_heartbeat or (lambda: None)
        self._handoff: queue.Queue[Job | _DetectRequest | None] = queue.Queue(maxsize=1)
        self._post: queue.Queue[Job | object | None] = queue.Queue(maxsize=4)
        self._stop = threading.Event()
        self._infer_done = threading.Event()  # the inference thread ended, normally or not
        self._stopped: bool | None = None
        self._threads: dict[str, threading.Thread] = {}
        self.finished = threading.Event()
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ sources

    @property
    def condition(self) -> threading.Condition:
        """The condition sources notify when they have a frame."""
        return self.scheduler.ready

    def add_source(self, source: Source, analyser: CameraAnalyser | None = None) -> None:
        self.scheduler.add(source, analyser)
        source.start()

    def remove_source(self, camera_id: str) -> None:
        source, analyser = self.scheduler.remove(camera_id)
        if source is not None:
            source.stop()
        if analyser is not None:
            analyser.close("removed")

    def sources(self) -> list[Source]:
        return self.scheduler.sources()

    def set_decode_settings(self, settings: DecodeSettings) -> None:
        self.decoder.settings = settings

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.stats.started_at = time.monotonic()
        self.emitter.open()
        for name, fn in (("emit", self._emit_loop), ("prepare", self._prepare_loop),
                         ("inference", self._infer_loop)):
            t = self._threads[name] = threading.Thread(target=self._guard(fn), name=name,
                                                       daemon=True)
            t.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop capture, finish the frames already taken or waiting, emit them, close the
        analysers (open events end) and the sinks, and end. Returns False when the threads did
        not finish in time (a hung backend); a second call returns the first one's answer."""
        if self._stopped is not None:
            return self._stopped
        for s in self.sources():
            s.stop()
        self._stop.set()
        with self.condition:
            self.condition.notify_all()
        self._stopped = self.join(timeout)
        if not self._stopped:
            alive = ", ".join(n for n, t in self._threads.items() if t.is_alive())
            log.error("pipeline did not finish within %.0f s (%s still running: hung backend?); "
                      "exiting without draining", timeout, alive)
        self.emitter.close()  # outcomes decided meanwhile (a deadline timer) go out first
        return self._stopped

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads.values():
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads.values())

    def _alive(self, name: str) -> bool:
        t = self._threads.get(name)
        return t is not None and t.is_alive()

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as err:  # recorded and re-raised by the daemon, never lost
                log.exception("pipeline thread %s failed", threading.current_thread().name)
                self.error = err
                # Pending inspections are answered `error: backend` now, not at their deadline.
                self.analyse.failed(f"{threading.current_thread().name}: {err}")
                self._stop.set()
                self.finished.set()
        return run

    # ------------------------------------------------------------------ prepare thread

    def _prepare_loop(self) -> None:
        while True:
            frame = self.scheduler.next_frame(self._stop)
            if frame is None:
                ending = self._stop.is_set() or (self.settings.exit_when_done
                                                 and self.scheduler.all_done())
                if ending and not self.scheduler.any_waiting():
                    break
                continue
            # an optional analyser member: an inspection station's ROI crop
            crop = getattr(self.scheduler.analyser(frame.camera), "crop_box", None)
            self._put(self._handoff, self.preparer(frame, crop), "inference")
        self._put(self._handoff, None, "inference")

    # ------------------------------------------------------------------ inference thread

    def _infer_loop(self) -> None:
        try:
            self._infer()
        finally:
            self._infer_done.set()

    def _infer(self) -> None:
        infer = Inferrer(self.backend, self.decoder)
        deliver = self._deliver
        while True:
            try:
                # Busy: a short look for the next frame (to overlap it with the running one),
                # then complete the oldest; a lone frame must not wait out an idle timeout.
                item = self._handoff.get(timeout=0.005 if infer.busy else 0.1)
            except queue.Empty:
                self._on_heartbeat()  # idle (no camera delivers) is not a hang
                if infer.busy:
                    infer.complete_one(deliver)
                continue
            self._on_heartbeat()
            if item is None:
                break
            if isinstance(item, _DetectRequest):
                while infer.busy:  # the request waits its turn; frames stay in order
                    infer.complete_one(deliver)
                self._serve(item)
                continue
            infer.submit(item)
            while infer.full:
                infer.complete_one(deliver)
        while infer.busy:
            infer.complete_one(deliver)
        self._put(self._post, None, "emit")

    def _deliver(self, job: Job) -> None:
        # Blocks while emitting is stuck, and deliberately sends no heartbeat meanwhile.
        self._put(self._post, job, "emit")

    def _serve(self, req: _DetectRequest) -> None:
        try:
            if req.tensor is None:
                handle = self.backend.submit_image(req.image, req.plan)  # type: ignore[attr-defined]
            else:
                handle = self.backend.submit(req.tensor)
            req.future.set_result(handle.wait()[0][0])
        except Exception as err:  # the request fails, the cameras go on
            req.future.set_exception(err)

    def _put(self, q: queue.Queue, item: object, consumer: str) -> None:  # type: ignore[type-arg]
        while True:
            try:
                q.put(item, timeout=0.5)
                return
            except queue.Full:
                if not self._alive(consumer):
                    return

    def detect(self, image: np.ndarray, timeout: float = 10.0) -> Detections:
        """Infer one uint8 BGR image with the running backend between camera frames and decode
        it with the current settings (the HTTP detect endpoint). Thread-safe; raises
        TimeoutError when the pipeline does not get to it in time."""
        if not self._alive("inference"):
            raise RuntimeError("the pipeline is not running")
        plan, tensor = self.preparer.one_off(image)
        req = _DetectRequest(plan, tensor, image, Future())
        self._handoff.put(req, timeout=timeout)
        output = req.future.result(timeout=timeout)
        return self.decoder(output, plan, {})

    # ------------------------------------------------------------------ emit thread

    def _wake(self) -> None:
        # A full queue: the emitting thread is busy and drains outcomes after each frame.
        with contextlib.suppress(queue.Full):
            self._post.put_nowait(_WAKE)

    def _emit_loop(self) -> None:
        interval = self.settings.health_interval
        next_health = time.monotonic()
        emitter = self.emitter
        emitter.health(self.health("starting"))
        while True:
            now = time.monotonic()
            if now >= next_health:
                self.analyse.poll_states()
                emitter.health(self.health("running"))
                release_free_heap()
                next_health = now + interval
            try:
                item = self._post.get(timeout=max(0.01, min(0.1, next_health - now)))
            except queue.Empty:
                self.analyse.poll_states()
                emitter.drain()
                if self._infer_done.is_set() and self._post.empty():
                    break  # inference failed: nothing more will come
                continue
            if item is None:
                break
            if isinstance(item, Job):
                self._emit_frame(item)
            emitter.drain()
        self.analyse.poll_states()
        self.analyse.close_all("stopping")
        emitter.drain()
        emitter.health(self.health("stopping"))
        self.finished.set()

    def _emit_frame(self, job: Job) -> None:
        timings = job.timings
        dets = job.detections
        assert dets is not None
        frame = job.frame
        result = FrameResult(camera=frame.camera, seq=self.stats.camera(frame.camera).seq,
                             frame=frame.index, ts=frame.ts, t_capture=frame.t_capture,
                             image=frame.image, detections=dets, labels=self.settings.labels,
                             latency_ms=timings)
        result = self.analyse(result, timings)
        self.emitter.frame(result, timings)

    # ------------------------------------------------------------------ health

    @property
    def fps(self) -> float:
        return self.stats.fps

    def health(self, state: str) -> HealthMessage:
        cams = []
        analysers = self.scheduler.analysers()
        for s in self.sources():
            st = s.stats()
            c = self.stats.camera(s.id)
            counters = getattr(analysers.get(s.id), "counters", None)  # an inspection station
            cams.append(CameraHealth(id=s.id, state=st.state.value, fps=st.fps, frames=st.frames,
                                     dropped=st.dropped, reconnects=st.reconnects,
                                     published=c.published, last_error=st.last_error,
                                     skipped=c.skipped + s.skipped,
                                     inspection=counters if isinstance(counters, dict) else None))
        sinks = {sink.name: sink.status() for sink in self.emitter.sinks  # type: ignore[attr-defined]
                 if callable(getattr(sink, "status", None))}
        return HealthMessage(ts=time.time(), state=state, uptime_s=self.stats.uptime,
                             fps=self.stats.fps, subscribers=self._subscribers(),
                             cameras=tuple(cams), sinks=sinks)

    def camera_states(self) -> dict[str, State]:
        return {s.id: s.state for s in self.sources()}
