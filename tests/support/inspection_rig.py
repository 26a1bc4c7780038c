"""A camera and a detector around an inspection station, for tests: the bundled photos as a
generated video of "parts", read back with cv2.VideoCapture and played as a live camera (the
frame shown is the one due at the wall-clock time; frames pass while inference runs, as with a
one-slot mailbox), every frame offered to `station.admit`, admitted frames through the bundled
YOLOv8n (lepton_edge.backends + preprocess + decode) and `station.analyse`.

Run as a script it is a station process: `python tests/support/inspection_rig.py --config
station.yaml --video parts.mp4 --state-dir DIR` prints each verdict as a JSON line until
SIGTERM (tests kill it with SIGKILL mid-run)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lepton_edge.artifact import load_artifact  # noqa: E402
from lepton_edge.backends import BackendOptions, available, create_backend  # noqa: E402
from lepton_edge.detections import Detections  # noqa: E402
from lepton_edge.pipeline.decode import DecodeSettings, get_decoder  # noqa: E402
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox  # noqa: E402
from lepton_edge.results import FrameResult  # noqa: E402

IMAGES = ROOT / "samples" / "images"
ENGINE = ROOT / "engines" / "yolov8n"
SIZE = (768, 576)


def make_parts_video(path: Path, names: Sequence[str], frames_each: int = 10,
                     fps: float = 10.0) -> Path:
    """A clip of the photos `names` (e.g. "dog"), each held for `frames_each` frames, all
    letterboxed onto one 768x576 canvas. Written as MJPG .avi (exact enough for detection)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, SIZE)
    assert writer.isOpened(), f"cannot write {path}"
    for name in names:
        img = cv2.imread(str(IMAGES / f"{name}.jpg"))
        assert img is not None, name
        scale = min(SIZE[0] / img.shape[1], SIZE[1] / img.shape[0])
        w, h = round(img.shape[1] * scale), round(img.shape[0] * scale)
        canvas = np.full((SIZE[1], SIZE[0], 3), 40, np.uint8)
        x, y = (SIZE[0] - w) // 2, (SIZE[1] - h) // 2
        canvas[y:y + h, x:x + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        for _ in range(frames_each):
            writer.write(canvas)
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, f"no frames in {path}"
    return frames


class Detector:
    """The bundled YOLOv8n on the fastest CPU runtime here (OpenVINO INT8, else ONNX Runtime
    INT8), one thread."""

    def __init__(self, backend: str | None = None, precision: str = "int8",
                 threads: int = 1) -> None:
        self.artifact = load_artifact(ENGINE)
        name = backend or ("openvino" if available("openvino")[0] else "onnxruntime")
        self.backend = create_backend(name, self.artifact,
                                      BackendOptions(precision=precision, threads=threads))
        self.backend.open()
        self.labels = tuple(self.artifact.classes)
        self.decode = get_decoder(self.artifact.family)
        self._boxes: dict[tuple[int, int], tuple[Letterbox, np.ndarray]] = {}
        self.name = f"{self.backend.name} {self.backend.precision}"
        for _ in range(3):  # first runs compile and grow arenas: not a part's latency
            self(np.zeros((SIZE[1], SIZE[0], 3), np.uint8))

    def __call__(self, image: np.ndarray) -> Detections:
        h, w = image.shape[:2]
        if (w, h) not in self._boxes:
            plan = plan_letterbox(w, h, 640, stride=self.artifact.input.stride)
            box = Letterbox(plan, self.backend.input.dtype, self.backend.input.layout)
            self._boxes[(w, h)] = (box, box.new_buffer())
        box, buf = self._boxes[(w, h)]
        box(image, buf[0])
        out = self.backend.submit(buf).wait()
        return self.decode(out[0][0], box.plan, DecodeSettings())

    def close(self) -> None:
        self.backend.close()


class Rig:
    """Plays `frames` at `fps` as a live camera into `station` (any CameraAnalyser)."""

    def __init__(self, station: Any, frames: list[np.ndarray], detector: Detector, *,
                 camera: str = "line-1", fps: float = 30.0,
                 video_fps: float | None = None) -> None:
        self.station = station
        self.video_fps = video_fps or fps
        self.frames = frames
        self.detector = detector
        self.camera = camera
        self.fps = fps
        self.index = -1  # the frame index being shown now
        self.inferred = 0
        self.infer_ms: list[float] = []
        self._stop = threading.Event()
        self._down = threading.Event()
        self._thread: threading.Thread | None = None
        self.t0 = 0.0

    def start(self) -> Rig:
        self.t0 = time.monotonic()
        self.station.on_state("connected", time.time())
        self._thread = threading.Thread(target=self._run, name="rig", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def video_index(self, index: int) -> int:
        """The clip's frame shown at camera frame `index` (the clip loops)."""
        return int(index * self.video_fps / self.fps) % len(self.frames)

    def part_at(self, index: int, frames_each: int) -> int:
        return self.video_index(index) // frames_each

    def lose_camera(self) -> None:
        self._down.set()
        self.station.on_state("retrying", time.time())

    def restore_camera(self) -> None:
        self.station.on_state("connecting", time.time())
        self._down.clear()
        self.station.on_state("connected", time.time())

    def _run(self) -> None:
        seq = 0
        last = -1
        while not self._stop.is_set():
            index = int((time.monotonic() - self.t0) * self.fps)
            if index == last or self._down.is_set():
                due = self.t0 + (last + 1) / self.fps
                self._stop.wait(max(0.0005, due - time.monotonic()))
                continue
            last = index
            t_capture = self.t0 + index / self.fps  # the frame's capture time
            self.index = index
            image = self.frames[self.video_index(index)]
            if not self.station.admit(image, index, t_capture):
                continue
            t = time.perf_counter()
            dets = self.detector(image)
            self.infer_ms.append((time.perf_counter() - t) * 1000)
            seq += 1
            self.inferred += 1
            result = FrameResult(self.camera, seq, index, time.time(), t_capture, image, dets,
                                 self.detector.labels, {"infer": self.infer_ms[-1]})
            self.station.analyse(result)


class Collector:
    """A thread-safe `emit`: keeps every outcome, and can wait for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, outcome: Any) -> None:
        with self._cond:
            self.items.append(outcome)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return list(self.items)


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    from lepton_edge.analysis.inspection.station import InspectConfig, build_station

    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="YAML of one camera's inspect: block")
    ap.add_argument("--video", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--camera", default="line-1")
    ap.add_argument("--fps", type=float, default=30.0)
    args = ap.parse_args(argv)
    cfg = InspectConfig.model_validate(yaml.safe_load(Path(args.config).read_text()))
    detector = Detector()

    def emit(v: Any) -> None:
        print(v.to_payload().decode(), flush=True)

    station = build_station(args.camera, cfg, emit, Path(args.state_dir),
                            labels=detector.labels)
    rig = Rig(station, read_video(Path(args.video)), detector, camera=args.camera,
              fps=args.fps).start()
    print(json.dumps({"ready": True, "counters": station.counters}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    rig.stop()
    station.close("stopping")
    detector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
