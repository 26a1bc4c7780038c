"""The pipeline's stages driven end to end: real sources on the bundled clips, real letterbox and
decode, and a scripted backend where the backend is not the subject (it returns a fixed YOLOv8
output, can be slow, can block, can fail on a chosen batch)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest

from lepton_edge.backends.base import BackendBase, TensorSpec
from lepton_edge.config import Camera
from lepton_edge.detections import Detections
from lepton_edge.messages import HealthMessage
from lepton_edge.pipeline.decode import DecodeSettings
from lepton_edge.pipeline.runner import Pipeline, PipelineSettings
from lepton_edge.pipeline.sources import Source
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.callback import CallbackSink
from tests.conftest import BIKES, VTEST

LABELS = ("person", "bicycle", "car")


def yolo_output(n_classes: int = 3) -> np.ndarray:
    """One confident person at the centre of a 640x512 input, as YOLOv8 lays it out."""
    out = np.zeros((1, 4 + n_classes, 8), np.float32)
    out[0, :4, 0] = (320, 256, 100, 200)
    out[0, 4, 0] = 0.9
    return out


class _Handle:
    def __init__(self, backend: ScriptedBackend, n: int) -> None:
        self._backend = backend
        self._n = n

    def wait(self) -> list[np.ndarray]:
        b = self._backend
        if b.block is not None:
            b.blocked.set()
            b.block.wait()
        if b.delays:
            time.sleep(b.delays[self._n % len(b.delays)])
        if b.fail_at == self._n:
            raise RuntimeError(f"scripted failure at batch {self._n}")
        b.completed.append(self._n)
        return [yolo_output()]


class ScriptedBackend(BackendBase):
    name = "scripted"

    def __init__(self, in_flight: int = 2, delays: tuple[float, ...] = (),
                 fail_at: int | None = None) -> None:
        self._in_flight = in_flight
        self.delays = delays
        self.fail_at = fail_at
        self.block: threading.Event | None = None
        self.blocked = threading.Event()
        self.submitted = 0
        self.completed: list[int] = []

    def open(self) -> None:
        self._input = TensorSpec("images", (1, 3, None, None), np.dtype(np.float32))

    def close(self) -> None:
        pass

    @property
    def max_in_flight(self) -> int:
        return self._in_flight

    def submit(self, batch: np.ndarray) -> _Handle:
        assert batch.shape[:2] == (1, 3) and batch.dtype == np.float32
        n = self.submitted
        self.submitted += 1
        return _Handle(self, n)


@dataclass
class Collector:
    frames: list[FrameResult] = field(default_factory=list)
    payloads: list[dict] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    healths: list[HealthMessage] = field(default_factory=list)
    gate: threading.Event | None = None
    name: str = "collector"

    def open(self) -> None:
        pass

    def frame(self, result: FrameResult, payload: bytes) -> None:
        if self.gate is not None:
            self.gate.wait()
        self.frames.append(result)
        self.payloads.append(json.loads(payload))

    def outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def health(self, health: HealthMessage) -> None:
        self.healths.append(health)

    def close(self) -> None:
        pass


SETTINGS = PipelineSettings(model_name="scripted", precision="fp32", family="yolov8",
                            labels=LABELS, decode=DecodeSettings(score=0.35, iou=0.5),
                            health_interval=0.2, exit_when_done=True)


@pytest.fixture
def run() -> Iterator:
    pipes: list[Pipeline] = []

    def make(backend: ScriptedBackend, sinks: list, settings: PipelineSettings = SETTINGS,
             **kw: object) -> Pipeline:
        backend.open()
        p = Pipeline(backend, sinks, settings, **kw)  # type: ignore[arg-type]
        pipes.append(p)
        return p

    yield make
    for p in pipes:
        p.stop(timeout=5)


def bench_camera(cid: str, url: object, frames: int, **kw: object) -> Camera:
    return Camera(id=cid, url=str(url), mode="bench", max_frames=frames, **kw)  # type: ignore[arg-type]


def add(p: Pipeline, cam: Camera, analyser: object = None) -> None:
    p.add_source(Source(cam, cam.url, p.condition), analyser)  # type: ignore[arg-type]


def test_every_frame_of_each_camera_in_order_with_gap_free_seq(run) -> None:
    backend = ScriptedBackend(in_flight=3, delays=(0.004, 0.0, 0.012, 0.001))
    sink = Collector()
    p = run(backend, [sink])
    p.start()
    add(p, bench_camera("plaza", VTEST, 30))
    add(p, bench_camera("street", BIKES, 20))
    assert p.finished.wait(60) and p.error is None
    for cam, n in (("plaza", 30), ("street", 20)):
        got = [r for r in sink.frames if r.camera == cam]
        assert [r.frame for r in got] == list(range(n))
        assert [r.seq for r in got] == list(range(n))
        assert [m["seq"] for m in sink.payloads if m["camera"] == cam] == list(range(n))
    assert backend.completed == list(range(50))  # completed in submission order
    # Real letterbox and decode: the scripted person is mapped back to source pixels.
    r = sink.frames[0]
    assert len(r.detections) == 1 and r.detections.class_id[0] == 0
    x1, y1, x2, y2 = r.detections.xyxy[0]
    assert 0 <= x1 < x2 <= r.width and 0 <= y1 < y2 <= r.height
    assert {"capture", "preprocess", "infer", "decode",
            "capture_to_publish"} <= set(sink.payloads[0]["latency_ms"])
    assert "publish" in p.stats.latency.summary()  # measured after the payload is sent
    assert p.stats.published_frames == 50
    assert sink.healths[0].state == "starting" and sink.healths[-1].state == "stopping"


def test_a_stuck_sink_holds_inference_back_and_stops_the_heartbeat(run) -> None:
    beats: list[float] = []
    gate = threading.Event()
    backend = ScriptedBackend(in_flight=2)
    sink = Collector(gate=gate)
    p = run(backend, [sink], on_heartbeat=lambda: beats.append(time.monotonic()))
    p.start()
    add(p, bench_camera("plaza", VTEST, 40))
    time.sleep(1.5)
    # Emitting is stuck on frame 0: the hand-off fills (4), inference stops submitting, and the
    # heartbeat (the systemd watchdog's food) stops with it.
    stuck_at = backend.submitted
    assert stuck_at <= 2 + 4 + 1 + 1
    n = len(beats)
    time.sleep(1.0)
    assert len(beats) == n and backend.submitted == stuck_at
    gate.set()
    assert p.finished.wait(60) and p.error is None
    assert [r.frame for r in sink.frames] == list(range(40))  # bench mode: nothing lost
    assert len(beats) > n


def test_idle_cameras_keep_the_heartbeat_a_hung_backend_stops_it(run) -> None:
    beats: list[float] = []
    backend = ScriptedBackend(in_flight=1)
    p = run(backend, [Collector()], on_heartbeat=lambda: beats.append(time.monotonic()))
    p.start()
    time.sleep(0.6)
    assert len(beats) >= 3  # no camera at all is idle, not hung
    backend.block = threading.Event()
    add(p, bench_camera("plaza", VTEST, 5))
    assert backend.blocked.wait(10)
    time.sleep(0.3)
    n = len(beats)
    time.sleep(0.8)
    assert len(beats) == n
    assert p.stop(timeout=1.0) is False  # a hung backend: stop says so instead of hanging
    backend.block.set()


def test_stop_drains_what_was_taken_and_closes_the_analysers(run) -> None:
    class Analyser:
        def __init__(self) -> None:
            self.closed: list[str] = []
            self.states: list[str] = []

        def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool:
            return True

        def analyse(self, result: FrameResult) -> Detections:
            return result.detections

        def on_state(self, state: str, ts: float) -> None:
            self.states.append(state)

        def close(self, reason: str) -> None:
            self.closed.append(reason)

    backend = ScriptedBackend(in_flight=2, delays=(0.01,))
    sink = Collector()
    analyser = Analyser()
    p = run(backend, [sink], settings=PipelineSettings(**{**SETTINGS.__dict__,
                                                          "exit_when_done": False}))
    p.start()
    add(p, Camera(id="plaza", url=str(VTEST), mode="bench", loop=True), analyser)
    deadline = time.monotonic() + 30
    while len(sink.frames) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.stop(timeout=10) is True and p.error is None
    # Everything submitted to the backend was completed and emitted, in order.
    assert len(sink.frames) == backend.submitted == len(backend.completed)
    assert [r.frame for r in sink.frames] == list(range(len(sink.frames)))
    assert analyser.closed == ["stopping"]
    assert "connected" in analyser.states
    assert sink.healths[-1].state == "stopping"


@pytest.mark.parametrize("where", ["backend", "analyser", "sink"])
def test_a_failing_stage_stops_the_pipeline_with_its_error(run, where: str) -> None:
    class Boom:
        def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool:
            return True

        def analyse(self, result: FrameResult) -> Detections:
            if result.frame == 3:
                raise ValueError("analyser failed on frame 3")
            return result.detections

        def on_state(self, state: str, ts: float) -> None:
            pass

        def close(self, reason: str) -> None:
            pass

    def bad_sink(result: FrameResult, payload: bytes) -> None:
        if result.frame == 4:
            raise OSError("sink failed on frame 4")

    backend = ScriptedBackend(fail_at=5 if where == "backend" else None)
    sinks = [CallbackSink(bad_sink)] if where == "sink" else [Collector()]
    p = run(backend, sinks)
    p.start()
    add(p, bench_camera("plaza", VTEST, 40), Boom() if where == "analyser" else None)
    assert p.finished.wait(30)
    expected = {"backend": (RuntimeError, "batch 5"), "analyser": (ValueError, "frame 3"),
                "sink": (OSError, "frame 4")}[where]
    assert isinstance(p.error, expected[0]) and expected[1] in str(p.error)
    assert p.stop(timeout=5) is True  # the other threads wind down


def test_frames_the_analyser_does_not_admit_are_never_letterboxed_or_inferred(run) -> None:
    emitted = threading.Event()

    @dataclass
    class Note:
        camera: str
        n: int

        @property
        def topic(self) -> str:
            return f"event.{self.camera}"

        def to_payload(self) -> bytes:
            return json.dumps({"v": 1, "n": self.n}).encode()

    class EveryThird:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool:
            return index % 3 == 0

        def analyse(self, result: FrameResult) -> Detections:
            self.seen.append(result.frame)
            # An outcome decided on another thread (a deadline timer) reaches every sink.
            threading.Timer(0.01, lambda: (p.emitter.emit(Note("plaza", result.frame)),
                                           emitted.set())).start()
            return result.detections.with_tracks(np.arange(len(result.detections)) + 7)

    analyser = EveryThird()
    analyser.on_state = lambda state, ts: None  # type: ignore[attr-defined]
    analyser.close = lambda reason: None  # type: ignore[attr-defined]
    backend = ScriptedBackend()
    sink = Collector()
    p = run(backend, [sink])
    p.start()
    add(p, bench_camera("plaza", VTEST, 30), analyser)
    assert p.finished.wait(30) and p.error is None
    assert analyser.seen == list(range(0, 30, 3)) and backend.submitted == 10
    assert p.stats.camera("plaza").skipped == 20
    assert [d["track_id"] for m in sink.payloads for d in m["detections"]] == [7] * 10
    assert sink.healths[-1].cameras[0].skipped == 20
    assert emitted.wait(5)
    time.sleep(0.1)  # the last timer fires after the pipeline finished: stop still delivers it
    assert p.stop(timeout=5)
    assert sorted(o.n for o in sink.outcomes) == list(range(0, 30, 3))  # type: ignore[attr-defined]


def test_detect_serves_a_one_off_image_between_camera_frames(run) -> None:
    backend = ScriptedBackend(in_flight=2, delays=(0.005,))
    sink = Collector()
    p = run(backend, [sink], settings=PipelineSettings(**{**SETTINGS.__dict__,
                                                          "exit_when_done": False}))
    p.start()
    add(p, Camera(id="plaza", url=str(VTEST), mode="bench", loop=True))
    image = np.full((480, 640, 3), 90, np.uint8)
    dets = p.detect(image)
    assert len(dets) == 1 and dets.class_id[0] == 0
    x1, y1, x2, y2 = dets.xyxy[0]
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
    assert p.stop(timeout=10)
    frames = [r.frame for r in sink.frames]
    assert frames == list(range(len(frames)))  # the request did not disturb the camera's order
