"""Calibration and evaluation frames: from an image folder, a video, or a YAML spec.

Every frame goes through the daemon's own letterbox (`plan_letterbox` + `Letterbox`), so the
INT8 scales are computed on exactly the tensors the daemon will feed. Frames are kept as the
decoded uint8 BGR images and letterboxed on access: a `FrameSet` is a `Sequence` of (1,3,H,W)
float32 tensors, which is what quantizers take.

A spec (`calibration/yolov8n.yaml`) names the frames used to calibrate and, separately, the
held-out frames used to evaluate; paths in it are relative to the spec file:

    size: 640
    calibrate:
      - {video: ../samples/vtest.avi, start: 0, stop: 399, stride: 2}
      - {images: ../samples/images}
    evaluate:
      - {video: ../samples/vtest.avi, start: 400, stop: 794, stride: 2}
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import cv2
import numpy as np
import yaml

from lepton_edge.errors import CompileError
from lepton_edge.pipeline.preprocess import Letterbox, LetterboxPlan, plan_letterbox

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"}
SPEC_SUFFIXES = {".yaml", ".yml"}
DEFAULT_COUNT = 500
DEFAULT_EVAL_COUNT = 320


@dataclass
class FrameSet(Sequence[np.ndarray]):
    """Decoded frames (uint8 BGR) with where each came from; item i is its letterboxed
    (1,3,H,W) float32 tensor, made by the daemon's letterbox at `size` (or `fixed` H,W)."""

    frames: list[np.ndarray]
    origins: list[str]
    size: int = 640
    fixed: tuple[int, int] | None = None
    stride: int = 32
    _boxes: dict[tuple[int, int], Letterbox] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self.tensor(i)[0] for i in range(*index.indices(len(self)))]
        return self.tensor(index)[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.tensor(i)[0]

    def plan(self, i: int) -> LetterboxPlan:
        h, w = self.frames[i].shape[:2]
        return self._letterbox(w, h).plan

    def tensor(self, i: int) -> tuple[np.ndarray, LetterboxPlan]:
        """Frame i letterboxed exactly as the daemon does: ((1,3,H,W) float32, plan)."""
        frame = self.frames[i]
        box = self._letterbox(frame.shape[1], frame.shape[0])
        buf = box.new_buffer()
        box(frame, buf[0])
        return buf, box.plan

    def _letterbox(self, w: int, h: int) -> Letterbox:
        box = self._boxes.get((w, h))
        if box is None:
            plan = plan_letterbox(w, h, self.size, stride=self.stride, fixed=self.fixed)
            box = self._boxes[(w, h)] = Letterbox(plan)
        return box

    def with_input(self, size: int, fixed: tuple[int, int] | None, stride: int) -> FrameSet:
        """The same frames for a model with this input geometry."""
        return FrameSet(self.frames, self.origins, size, fixed, stride)

    def sha256(self) -> str:
        """Hash of the frames' pixels and order (what the scales were computed from)."""
        h = hashlib.sha256()
        for f in self.frames:
            h.update(np.asarray(f.shape, np.int64).tobytes())
            h.update(np.ascontiguousarray(f).tobytes())
        return h.hexdigest()

    def describe(self) -> list[str]:
        """One line per source, e.g. `vtest.avi[0:400:2] (200 frames)`."""
        counts: dict[str, int] = {}
        for o in self.origins:
            key = o.split("#")[0]
            counts[key] = counts.get(key, 0) + 1
        return [f"{k} ({n} frames)" for k, n in counts.items()]


@dataclass(frozen=True)
class Frames:
    """The calibration frames and the held-out evaluation frames of one compile."""

    calibrate: FrameSet
    evaluate: FrameSet
    source: str


def load_frames(path: str | Path, *, count: int = DEFAULT_COUNT, size: int = 640,
                eval_path: str | Path | None = None,
                eval_count: int = DEFAULT_EVAL_COUNT) -> Frames:
    """Calibration and held-out frames from `path` (image folder, video or YAML spec).

    A spec names both sets. For a folder or a video, `count` frames are sampled evenly for
    calibration and up to `eval_count` *other* frames are held out to evaluate, unless
    `eval_path` gives the evaluation frames explicitly. Raises CompileError (one line) when the
    path is missing, unreadable, or holds no frames.
    """
    path = Path(path)
    if count < 1:
        raise CompileError(f"--calib-count must be at least 1, got {count}")
    if not path.exists():
        raise CompileError(f"{path}: calibration path not found (give an image folder, a video "
                           f"or a YAML spec such as calibration/yolov8n.yaml)")
    if path.is_file() and path.suffix.lower() in SPEC_SUFFIXES:
        calib, held = _from_spec(path, size)
    else:
        calib, held = _split(path, count, eval_count, size)
    if eval_path is not None:
        held = load_frames_only(Path(eval_path), count=eval_count, size=size)
    if len(calib) == 0:
        raise CompileError(f"{path}: no calibration frames found")
    if len(held) == 0:
        raise CompileError(f"{path}: no held-out frames to evaluate on; give --eval PATH or "
                           f"an `evaluate:` section in the spec")
    return Frames(calib, held, str(path))


def load_frames_only(path: Path, *, count: int = DEFAULT_EVAL_COUNT, size: int = 640) -> FrameSet:
    """All the frames a path names, for evaluation: a spec's `evaluate` section (or its
    `calibrate` one when it has none), up to `count` evenly sampled frames of a video, or the
    images of a folder."""
    if not path.exists():
        raise CompileError(f"{path}: evaluation data not found")
    if path.is_file() and path.suffix.lower() in SPEC_SUFFIXES:
        spec = _read_spec(path)
        entries = spec.get("evaluate") or spec.get("calibrate") or []
        return _entries(entries, path.parent, int(spec.get("size", size)), f"{path}: evaluate")
    if path.is_dir():
        return _collect(_images(path), size)
    return _collect(_video(path, _even(_frame_count(path), count)), size)


def _split(path: Path, count: int, eval_count: int, size: int) -> tuple[FrameSet, FrameSet]:
    if path.is_dir():
        files = _files_or_fail(path)
        held_idx = set(range(4, len(files), 5)) if len(files) >= 5 else set()  # every 5th
        calib_files = [f for i, f in enumerate(files) if i not in held_idx][:count]
        held_files = [f for i, f in enumerate(files) if i in held_idx][:eval_count]
        return (_collect(_images_from(calib_files), size),
                _collect(_images_from(held_files), size))
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        kinds = ", ".join(sorted(VIDEO_SUFFIXES))
        raise CompileError(f"{path}: not an image folder, a video ({kinds}) or a YAML spec")
    total = _frame_count(path)
    calib_idx = _even(total, count)
    taken = set(calib_idx)
    rest = [i for i in range(total) if i not in taken]
    held_frames = [rest[i] for i in _even(len(rest), eval_count)]
    return _collect(_video(path, calib_idx), size), _collect(_video(path, held_frames), size)


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CompileError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(spec, dict) or not isinstance(spec.get("calibrate"), list):
        raise CompileError(f"{path}: a calibration spec needs a `calibrate:` list of "
                           f"{{video: ..., start, stop, stride}} or {{images: ...}} entries")
    return spec


def _from_spec(path: Path, size: int) -> tuple[FrameSet, FrameSet]:
    spec = _read_spec(path)
    size = int(spec.get("size", size))
    calib = _entries(spec["calibrate"], path.parent, size, f"{path}: calibrate")
    held = _entries(spec.get("evaluate") or [], path.parent, size, f"{path}: evaluate")
    overlap = set(calib.origins) & set(held.origins)
    if overlap:
        raise CompileError(f"{path}: {len(overlap)} frames are in both calibrate and evaluate "
                           f"(e.g. {sorted(overlap)[0]}); held-out frames must be disjoint")
    return calib, held


def _entries(entries: list[Any], base: Path, size: int, where: str) -> FrameSet:
    frames: list[tuple[np.ndarray, str]] = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict) or not ({"video", "images"} & set(entry)):
            raise CompileError(f"{where}[{k}]: expected {{video: PATH, start, stop, stride}} or "
                               f"{{images: FOLDER}}, got {entry!r}")
        if "images" in entry:
            frames.extend(_images(base / entry["images"]))
            continue
        video = base / entry["video"]
        if not video.is_file():
            raise CompileError(f"{where}[{k}]: video {video} not found")
        start = int(entry.get("start", 0))
        stop = int(entry.get("stop", _frame_count(video) - 1))  # inclusive
        stride = int(entry.get("stride", 1))
        if stride < 1 or stop < start:
            raise CompileError(f"{where}[{k}]: need start <= stop and stride >= 1, got "
                               f"start {start}, stop {stop}, stride {stride}")
        frames.extend(_video(video, list(range(start, stop + 1, stride))))
    return _collect(frames, size)


def _collect(frames: list[tuple[np.ndarray, str]] | Iterator[tuple[np.ndarray, str]],
             size: int) -> FrameSet:
    items = list(frames)
    return FrameSet([f for f, _ in items], [o for _, o in items], size)


def _even(total: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(total) (all of them when count >= total)."""
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count).round()})


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _images(folder: Path) -> list[tuple[np.ndarray, str]]:
    return _images_from(_files_or_fail(folder))


def _files_or_fail(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CompileError(f"{folder}: image folder not found")
    files = _image_files(folder)
    if not files:
        raise CompileError(f"{folder}: no images in the calibration path (looked for "
                           f"{', '.join(sorted(IMAGE_SUFFIXES))}); give a folder of images, a "
                           f"video or a YAML spec")
    return files


def _images_from(files: list[Path]) -> list[tuple[np.ndarray, str]]:
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise CompileError(f"{f}: OpenCV cannot decode this image; remove it from the "
                               f"calibration folder")
        out.append((img, f"{f.parent.name}/{f.name}"))
    return out


def _frame_count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise CompileError(f"{video}: OpenCV cannot open this video")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if n <= 0:
        raise CompileError(f"{video}: the video has no frames OpenCV can count")
    return n


def _video(video: Path, indices: Sequence[int]) -> list[tuple[np.ndarray, str]]:
    """Frames `indices` (sorted) of a video, read sequentially (seeking is not exact for every
    codec)."""
    wanted = sorted(set(indices))
    out: list[tuple[np.ndarray, str]] = []
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise CompileError(f"{video}: OpenCV cannot open this video")
    try:
        i, k = 0, 0
        while k < len(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if i == wanted[k]:
                out.append((frame, f"{video.name}#{i}"))
                k += 1
            i += 1
    finally:
        cap.release()
    if len(out) < len(wanted):
        raise CompileError(f"{video}: asked for frame {wanted[len(out)]}, the video ended after "
                           f"{len(out)} of the {len(wanted)} frames wanted")
    return out
