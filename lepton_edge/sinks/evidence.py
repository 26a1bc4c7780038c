"""Failure evidence: the frame of every `fail` and `error` verdict (and every Nth `pass`), as a
JPEG with the ROIs and boxes drawn, beside its verdict JSON; oldest first out when the folder
holds more than `max_files` verdicts or `max_bytes`.

The station names the file in the verdict (`evidence`, `<camera>-<trigger_id>-<verdict>.jpg`)
before it is written, so the verdict on the wire and in the log points at it; this sink writes
it on its own thread (a slow disk costs evidence, never the line). A verdict without a frame
(camera lost, overrun) gets its JSON only. Files are written to a temporary name and renamed,
so a reader never sees half a JPEG.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lepton_edge.analysis.inspection.rules import Roi
from lepton_edge.analysis.inspection.verdict import Verdict
from lepton_edge.errors import ConfigError
from lepton_edge.results import Outcome
from lepton_edge.sinks.base import QueuedSink

log = logging.getLogger(__name__)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GREEN, _RED, _GREY, _WHITE = (60, 200, 60), (40, 40, 230), (160, 160, 160), (255, 255, 255)


class EvidenceConfig(BaseModel):
    """`sample_passes: N` keeps every Nth pass too (0: none). `path` is relative to the state
    directory; each camera writes into its own folder below it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    path: str = "evidence"
    sample_passes: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    max_files: Annotated[int, Field(ge=1, le=10_000_000)] = 2000
    max_bytes: Annotated[int, Field(ge=1 << 20)] = 1 << 30
    jpeg_quality: Annotated[int, Field(ge=10, le=100)] = 85


def evidence_name(camera: str, trigger_id: int, verdict: str) -> str:
    return f"{camera}-{trigger_id:08d}-{verdict}.jpg"


def draw_verdict(v: Verdict, rois: Sequence[Roi]) -> np.ndarray:
    """A copy of the verdict's frame with ROIs (red: a rule failed there), every box, and a
    banner: verdict, trigger id and the first reason."""
    assert v.image is not None
    out = v.image.copy()
    h, w = out.shape[:2]
    scale = max(0.45, min(h, w) / 900)
    failed = {r.roi for r in v.reasons}
    for roi in rois:
        pts = roi.outline(w, h).round().astype(np.int32).reshape(-1, 1, 2)
        color = _RED if roi.id in failed else _GREEN
        cv2.polylines(out, [pts], True, color, 2)
        x, y = pts[0, 0]
        cv2.putText(out, roi.id, (int(x) + 4, int(y) + 18), _FONT, scale, color, 1, cv2.LINE_AA)
    dets = v.detections
    if dets is not None:
        counted = {tuple(d["box"]) for items in v.rois.values() for d in items}
        for box, score, cls in zip(dets.xyxy.tolist(), dets.score.tolist(),
                                   dets.class_id.tolist(), strict=True):
            x1, y1, x2, y2 = (round(c) for c in box)
            key = tuple(round(c, 1) for c in box)
            color = _WHITE if key in counted else _GREY
            cv2.rectangle(out, (x1, y1), (x2, y2), color, 2)
            name = v.labels[cls] if 0 <= cls < len(v.labels) else str(cls)
            cv2.putText(out, f"{name} {score:.2f}", (x1 + 2, max(12, y1 - 4)), _FONT, scale,
                        color, 1, cv2.LINE_AA)
    _banner(out, v, scale)
    return out


def _banner(out: np.ndarray, v: Verdict, scale: float) -> None:
    reason = ""
    if v.reasons:
        r = v.reasons[0]
        reason = f": {r.code} {r.roi or ''} {r.rule or ''} expected {r.expected} found {r.found}"
    text = f"{v.verdict.upper()} #{v.trigger_id}{reason}"
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    color = _GREEN if v.verdict == "pass" else _RED
    cv2.rectangle(out, (0, 0), (min(out.shape[1], tw + 12), th + base + 10), color, -1)
    cv2.putText(out, text, (6, th + 5), _FONT, scale, _WHITE, 1, cv2.LINE_AA)


class EvidenceWriter(QueuedSink):
    """Writes the evidence of one station's verdicts into `folder`."""

    name = "evidence"

    def __init__(self, folder: Path, cfg: EvidenceConfig, rois: Sequence[Roi]) -> None:
        super().__init__(frame_queue=1, outcome_queue=256)
        self.folder = Path(folder)
        self.cfg = cfg
        self.rois = tuple(rois)
        self._kept: deque[tuple[str, int]] = deque()  # (stem, bytes), oldest first
        self.bytes = 0
        self.written = 0
        self.removed = 0

    def on_open(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"evidence folder {self.folder}: cannot create it "
                              f"({err.strerror or err})") from err
        sizes: dict[str, int] = {}
        mtimes: dict[str, float] = {}
        for p in self.folder.iterdir():
            if p.suffix in (".jpg", ".json") and p.is_file():
                st = p.stat()
                sizes[p.stem] = sizes.get(p.stem, 0) + st.st_size
                mtimes[p.stem] = max(mtimes.get(p.stem, 0.0), st.st_mtime)
        for stem in sorted(sizes, key=lambda s: (mtimes[s], s)):
            self._kept.append((stem, sizes[stem]))
            self.bytes += sizes[stem]
        self._retain()

    def deliver_outcome(self, outcome: Outcome) -> bool:
        if not isinstance(outcome, Verdict) or outcome.evidence is None:
            return True
        stem = Path(outcome.evidence).stem
        size = 0
        if outcome.image is not None:
            ok, jpeg = cv2.imencode(".jpg", draw_verdict(outcome, self.rois),
                                    [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
            if ok:
                size += self._write(f"{stem}.jpg", jpeg.tobytes())
        size += self._write(f"{stem}.json", outcome.to_payload() + b"\n")
        self._kept.append((stem, size))
        self.bytes += size
        self.written += 1
        self._retain()
        return True

    def _write(self, name: str, data: bytes) -> int:
        tmp = self.folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.folder / name)
        return len(data)

    def _retain(self) -> None:
        while self._kept and (len(self._kept) > self.cfg.max_files
                              or self.bytes > self.cfg.max_bytes):
            stem, size = self._kept.popleft()
            for suffix in (".jpg", ".json"):
                (self.folder / f"{stem}{suffix}").unlink(missing_ok=True)
            self.bytes -= size
            self.removed += 1

    @property
    def files(self) -> int:
        return len(self._kept)


def load_evidence(path: Path) -> dict[str, object]:
    """The verdict JSON beside an evidence JPEG (for tools and tests)."""
    return json.loads(path.with_suffix(".json").read_text())
