"""The diff of two recordings: B (the candidate) scored against A (the reference), frame by frame.

Frames are matched by (camera, source frame index). In each frame, each candidate box (best
score first) takes the unmatched reference box of its class with the highest IoU, if that IoU
is at least `iou`; that gives per-class precision and recall and the frames that differ most.
The agreement mAP50 (and mAP50-95) is the compiler's accuracy gate's own scoring
(`compiler.accuracy.agreement`, faster-coco-eval), so the diff of a float and an INT8 run on the
gate's frames, recorded with the gate's thresholds, reports the number the gate reported.

Reproducing the gate (`calibration/yolov8n.yaml`, held-out frames): record both runs with
`thresholds: {score: 0.001, iou: 0.7, max_detections: 300}` and diff with `--ref-score 0.25
--frames plaza=400:794:2 --frames bikes=125:249` (the gate's reference keeps float boxes with
score >= 0.25; greedy NMS keeps the same such boxes whatever the lower score floor).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.devtools.recording import Recording, to_detections
from lepton_edge.errors import BackendUnavailableError, CompileError, ConfigError, MessageError
from lepton_edge.pipeline.nms import box_iou

FrameKey = tuple[str, int]  # camera, source frame index


@dataclass(frozen=True)
class FrameSelection:
    """Frames `start..stop` (inclusive, as in calibration specs) every `stride`, of `camera`
    (of every camera when None)."""

    start: int
    stop: int
    stride: int = 1
    camera: str | None = None

    def __contains__(self, key: FrameKey) -> bool:
        cam, frame = key
        if self.camera is not None and cam != self.camera:
            return False
        return self.start <= frame <= self.stop and (frame - self.start) % self.stride == 0


_SELECTION = re.compile(r"^(?:(?P<cam>[A-Za-z0-9_.:-]+)=)?(?P<start>\d+):(?P<stop>\d+)"
                        r"(?::(?P<stride>\d+))?$")


def parse_selection(text: str) -> FrameSelection:
    """`[CAMERA=]START:STOP[:STRIDE]`, e.g. `plaza=400:794:2` or `0:199`."""
    m = _SELECTION.match(text.strip())
    if m is None:
        raise ConfigError(f"--frames {text!r}: expected [CAMERA=]START:STOP[:STRIDE] (inclusive "
                          f"stop), e.g. plaza=400:794:2")
    start, stop, stride = int(m["start"]), int(m["stop"]), int(m["stride"] or 1)
    if stop < start or stride < 1:
        raise ConfigError(f"--frames {text!r}: needs START <= STOP and STRIDE >= 1")
    return FrameSelection(start, stop, stride, m["cam"])


@dataclass(frozen=True)
class ClassStats:
    class_id: int
    label: str
    reference: int  # boxes in A
    candidate: int  # boxes in B
    matched: int

    @property
    def precision(self) -> float:
        return self.matched / self.candidate if self.candidate else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 1.0


@dataclass(frozen=True)
class FrameDiff:
    """One frame: what only A found and what only B found, as (label, score) pairs."""

    camera: str
    frame: int
    reference: int
    candidate: int
    only_a: tuple[tuple[str, float], ...]
    only_b: tuple[tuple[str, float], ...]

    @property
    def differences(self) -> int:
        return len(self.only_a) + len(self.only_b)


@dataclass(frozen=True)
class Comparison:
    """B against A over `frames` frames. `missing`: frames of A that B does not have (scored as
    frames where B found nothing); `extra`: frames only B has (not scored)."""

    frames: int
    missing: int
    extra: int
    map50: float
    map50_95: float
    classes: tuple[ClassStats, ...]
    worst: tuple[FrameDiff, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> ClassStats:
        return ClassStats(-1, "all", sum(c.reference for c in self.classes),
                          sum(c.candidate for c in self.classes),
                          sum(c.matched for c in self.classes))

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames": self.frames, "missing": self.missing, "extra": self.extra,
            "map50": round(self.map50, 4), "map50_95": round(self.map50_95, 4),
            **dict(self.settings),
            "classes": [{"class_id": c.class_id, "label": c.label, "reference": c.reference,
                         "candidate": c.candidate, "matched": c.matched,
                         "precision": round(c.precision, 4), "recall": round(c.recall, 4)}
                        for c in (*self.classes, self.total)],
            "worst_frames": [{"camera": f.camera, "frame": f.frame, "only_a": f.only_a,
                              "only_b": f.only_b} for f in self.worst],
        }

    def format(self) -> str:
        s = self.settings
        lines = [f"B against A: {self.frames} frames; agreement mAP50 {self.map50:.4f}, "
                 f"mAP50-95 {self.map50_95:.4f} (A boxes with score >= {s.get('ref_score', 0)})"]
        if self.missing or self.extra:
            lines.append(f"  {self.missing} frames of A missing from B (scored as empty), "
                         f"{self.extra} frames only in B (ignored)")
        lines.append(f"  per class (IoU >= {s.get('iou', 0.5)}, B boxes with score >= "
                     f"{s.get('score', 0)}):")
        lines.append(f"  {'class':<16}{'A':>7}{'B':>7}{'match':>7}{'precision':>11}{'recall':>8}")
        for c in (*self.classes, self.total):
            lines.append(f"  {c.label[:16]:<16}{c.reference:>7}{c.candidate:>7}{c.matched:>7}"
                         f"{c.precision:>11.3f}{c.recall:>8.3f}")
        if self.worst:
            lines.append("  frames that differ most:")
        for f in self.worst:
            a = ", ".join(f"{lab} {sc:.2f}" for lab, sc in f.only_a[:4]) or "-"
            b = ", ".join(f"{lab} {sc:.2f}" for lab, sc in f.only_b[:4]) or "-"
            lines.append(f"    {f.camera} frame {f.frame}: only in A: {a}; only in B: {b}")
        return "\n".join(lines)


def match(reference: Detections, candidate: Detections, iou: float) -> tuple[np.ndarray, ...]:
    """Greedy per-class matching. Returns (matched mask over reference, matched mask over
    candidate): candidates in descending score order each take the unmatched reference box of
    their class with the highest IoU >= `iou`."""
    ref_hit = np.zeros(len(reference), bool)
    cand_hit = np.zeros(len(candidate), bool)
    if len(reference) == 0 or len(candidate) == 0:
        return ref_hit, cand_hit
    ious = box_iou(candidate.xyxy.astype(np.float64), reference.xyxy.astype(np.float64))
    ious[candidate.class_id[:, None] != reference.class_id[None, :]] = -1.0
    for j in np.argsort(-candidate.score, kind="stable"):
        row = np.where(ref_hit, -1.0, ious[j])
        k = int(row.argmax())
        if row[k] >= iou:
            ref_hit[k] = cand_hit[j] = True
    return ref_hit, cand_hit


def compare(a: Recording, b: Recording, *, iou: float = 0.5, ref_score: float = 0.0,
            score: float | None = None, frames: Sequence[FrameSelection] = (),
            cameras: Sequence[str] = (), worst: int = 10) -> Comparison:
    """Score recording `b` against recording `a` (see the module docstring).

    ref_score: A's boxes below it are dropped (the gate uses 0.25). score: B's boxes below it
    are left out of precision/recall and the worst frames (default: ref_score); the mAP ranks
    all of B's boxes, as COCO evaluation does. frames/cameras: restrict the frames compared.
    """
    score = ref_score if score is None else score
    keys = _keys(a, frames, cameras)
    if not keys:
        raise MessageError(f"{a.path}: no frames to compare (the recording has "
                           f"{a.frame_count} detection messages; check --frames and --camera)")
    labels = {**b.labels, **a.labels}
    ref, cand = [], []
    counts: dict[int, list[int]] = {}
    diffs = []
    missing = 0
    for cam, frame in keys:
        ra = to_detections(a.cameras[cam][frame])
        mb = b.cameras.get(cam, {}).get(frame)
        rb = to_detections(mb) if mb is not None else Detections.empty()
        missing += mb is None
        ref.append(ra)
        cand.append(rb)
        ra, rb = ra[ra.score >= ref_score], rb[rb.score >= score]
        hit_a, hit_b = match(ra, rb, iou)
        for col, cls in enumerate((ra.class_id, rb.class_id)):
            for c in cls.tolist():
                counts.setdefault(c, [0, 0, 0])[col] += 1
        for c in ra.class_id[hit_a].tolist():
            counts[c][2] += 1
        only_a = tuple((labels.get(c, str(c)), s) for c, s in
                       zip(ra.class_id[~hit_a].tolist(), ra.score[~hit_a].tolist(), strict=True))
        only_b = tuple((labels.get(c, str(c)), s) for c, s in
                       zip(rb.class_id[~hit_b].tolist(), rb.score[~hit_b].tolist(), strict=True))
        diffs.append(FrameDiff(cam, frame, len(ra), len(rb), only_a, only_b))
    extra = sum(1 for cam, f in b.cameras.items() for i in f
                if cam in a.cameras and i not in a.cameras[cam]
                and _selected((cam, i), frames, cameras))
    map50, map50_95 = _agreement(a, ref, cand, ref_score)
    classes = tuple(ClassStats(c, labels.get(c, str(c)), *counts[c]) for c in sorted(counts))
    diffs.sort(key=lambda d: (-d.differences, d.camera, d.frame))
    return Comparison(
        frames=len(keys), missing=missing, extra=extra, map50=map50, map50_95=map50_95,
        classes=classes, worst=tuple(d for d in diffs[:worst] if d.differences),
        settings={"iou": iou, "ref_score": ref_score, "score": score},
    )


def _selected(key: FrameKey, frames: Sequence[FrameSelection], cameras: Sequence[str]) -> bool:
    if cameras and key[0] not in cameras:
        return False
    return not frames or any(key in sel for sel in frames)


def _keys(a: Recording, frames: Sequence[FrameSelection], cameras: Sequence[str]) -> list[FrameKey]:
    for cam in cameras:
        a.camera(cam)  # raises, naming the cameras it has
    return [(cam, i) for cam, msgs in a.cameras.items() for i in msgs
            if _selected((cam, i), frames, cameras)]


def _agreement(a: Recording, ref: list[Detections], cand: list[Detections],
               ref_score: float) -> tuple[float, float]:
    """The accuracy gate's agreement score (compiler.accuracy.agreement)."""
    try:
        from lepton_edge.compiler.accuracy import agreement

        s = agreement(ref, cand, min_score=ref_score)
    except ImportError as err:
        raise BackendUnavailableError(
            f"diff scores agreement with faster-coco-eval, which is not installed ({err}); "
            f"install it with: pip install 'lepton-edge[compile]'") from err
    except CompileError as err:
        raise MessageError(f"{a.path}: A has no boxes with score >= {ref_score} on the compared "
                           f"frames, so agreement cannot be scored; pick frames with objects "
                           f"in them or lower --ref-score") from err
    return s.map50, s.map50_95
