"""Offline replay of a clip through an analyser, with the detector's output cached.

`detect_clip` runs the bundled model (lepton_edge.backends + preprocess + decode, as
`lepton-edge bench` does) over every frame of a clip once and caches the detections in an npz
(`.cache/analysis/` by default). `replay` then feeds the frames in order through
`admit()`/`analyse()`: exact for gating, since one frame's detections never depend on which
other frames were inferred. Frame times are index / clip fps (the clip's own clock).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from lepton_edge.artifact import Artifact, load_artifact
from lepton_edge.backends import BackendOptions, create_backend
from lepton_edge.detections import Detections
from lepton_edge.errors import SourceError
from lepton_edge.pipeline.decode import DecodeSettings, get_decoder
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox
from lepton_edge.results import CameraAnalyser, FrameResult, Outcome

log = logging.getLogger(__name__)

CACHE = Path(".cache") / "analysis"
T0 = 1_764_000_000.0  # the epoch time of a replay's frame 0
DEFAULT_DECODE = DecodeSettings()  # the daemon's default thresholds (score 0.35, IoU 0.5)


@dataclass(frozen=True)
class ClipDetections:
    """Every frame's detections of one clip. fps: the clip's frame rate."""

    frames: tuple[Detections, ...]
    labels: tuple[str, ...]
    fps: float

    def __len__(self) -> int:
        return len(self.frames)


def _key(clip: Path, model: Path, backend: str, precision: str, settings: DecodeSettings) -> str:
    h = hashlib.sha256()
    for p in (clip, model / "manifest.yaml"):
        h.update(p.read_bytes())
    h.update(f"{backend}:{precision}:{settings}".encode())
    return h.hexdigest()[:16]


def frames_of(clip: Path) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(clip))
    if not cap.isOpened():
        raise SourceError(f"{clip}: cannot open the clip (is it a video file OpenCV reads?)")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def clip_fps(clip: Path) -> float:
    cap = cv2.VideoCapture(str(clip))
    fps = float(cap.get(cv2.CAP_PROP_FPS)) or 25.0
    cap.release()
    return fps


def detect_clip(clip: str | Path, model: str | Path = "engines/yolov8n", *,
                backend: str = "onnxruntime", precision: str = "fp32", threads: int = 2,
                settings: DecodeSettings = DEFAULT_DECODE, cache: Path | None = CACHE,
                ) -> ClipDetections:
    """Detections of every frame of `clip`, from the cache when it has them."""
    clip, model = Path(clip), Path(model)
    if not clip.is_file():
        raise SourceError(f"{clip}: no such clip")
    artifact = load_artifact(model)
    path = None
    if cache is not None:
        path = cache / f"{clip.stem}-{_key(clip, model, backend, precision, settings)}.npz"
        if path.is_file():
            return _load(path, tuple(artifact.classes))
    with Detector(artifact, backend=backend, precision=precision, threads=threads,
                  settings=settings) as detect:
        frames = [detect(frame) for frame in frames_of(clip)]
    result = ClipDetections(tuple(frames), tuple(artifact.classes), clip_fps(clip))
    if path is not None:
        _save(path, result)
    return result


class Detector:
    """The bundled model on one frame at a time: letterbox, infer, decode (a context manager)."""

    def __init__(self, artifact: Artifact | str | Path, *, backend: str = "onnxruntime",
                 precision: str = "fp32", threads: int = 2,
                 settings: DecodeSettings = DEFAULT_DECODE) -> None:
        self.artifact = artifact if isinstance(artifact, Artifact) else load_artifact(artifact)
        self.labels = tuple(self.artifact.classes)
        self._backend = create_backend(backend, self.artifact,
                                       BackendOptions(precision=precision, threads=threads))
        self._decode = get_decoder(self.artifact.family)
        self._settings = settings
        self._box: Letterbox | None = None
        self._tensor: np.ndarray | None = None

    def __enter__(self) -> Detector:
        self._backend.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._backend.close()

    def __call__(self, frame: np.ndarray) -> Detections:
        if self._box is None or self._box.plan.src_w != frame.shape[1] \
                or self._box.plan.src_h != frame.shape[0]:
            plan = plan_letterbox(frame.shape[1], frame.shape[0], 640,
                                  stride=self.artifact.input.stride)
            self._box = Letterbox(plan, self._backend.input.dtype, self._backend.input.layout)
            self._tensor = self._box.new_buffer()
        assert self._tensor is not None
        self._box(frame, self._tensor[0])
        out = self._backend.submit(self._tensor).wait()[0][0]
        return self._decode(out, self._box.plan, self._settings)


def _save(path: Path, d: ClipDetections) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = np.array([len(f) for f in d.frames], np.int64)
    frames = d.frames or (Detections.empty(),)
    np.savez_compressed(path.with_suffix(".tmp.npz"), n=n,
                        xyxy=np.concatenate([f.xyxy for f in frames]),
                        score=np.concatenate([f.score for f in frames]),
                        class_id=np.concatenate([f.class_id for f in frames]),
                        fps=np.float64(d.fps))
    path.with_suffix(".tmp.npz").replace(path)


def _load(path: Path, labels: tuple[str, ...]) -> ClipDetections:
    z = np.load(path)
    ends = np.cumsum(z["n"])
    starts = ends - z["n"]
    frames = tuple(Detections(z["xyxy"][s:e], z["score"][s:e], z["class_id"][s:e])
                   for s, e in zip(starts, ends, strict=True))
    return ClipDetections(frames, labels, float(z["fps"]))


@dataclass
class ReplayResult:
    outcomes: list[Outcome] = field(default_factory=list)
    frames: int = 0
    inferred: int = 0
    tracked: list[Detections] = field(default_factory=list)

    @property
    def fraction_inferred(self) -> float:
        return self.inferred / self.frames if self.frames else 0.0

    def payloads(self) -> list[dict[str, object]]:
        import json

        return [json.loads(o.to_payload()) for o in self.outcomes]


def replay(clip: str | Path, dets: ClipDetections,
           build: Callable[[Callable[[Outcome], None]], CameraAnalyser], *,
           camera: str = "replay", images: Iterator[np.ndarray] | None = None,
           close: str = "stopping") -> ReplayResult:
    """Feed the clip's frames, in order, through the analyser `build(emit)` returns; the cached
    detections stand in for inference on the frames it admits. `images` replaces the clip's
    frames (a generated clip): then `dets` must have one entry per image."""
    res = ReplayResult()
    analyser = build(res.outcomes.append)
    source = images if images is not None else frames_of(Path(clip))
    for i, image in enumerate(source):
        if i >= len(dets):
            break
        t = i / dets.fps
        res.frames += 1
        if not analyser.admit(image, i, t):
            continue
        res.inferred += 1
        image.flags.writeable = False
        fr = FrameResult(camera, res.inferred, i, T0 + t, t, image, dets.frames[i], dets.labels,
                         {})
        res.tracked.append(analyser.analyse(fr))
    analyser.close(close)
    return res
