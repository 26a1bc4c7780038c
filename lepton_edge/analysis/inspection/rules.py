"""Regions of interest and the rules a part must meet inside them.

An ROI is a rectangle or a polygon in source pixels (or the whole frame when neither is given).
A detection belongs to an ROI when its box centre lies inside it (`membership: center`) or when
the whole box does (`membership: inside`), and only if its score is at least the ROI's
`min_score`. Rules per ROI: counts of a class (`min`, `max` or `exact`) and forbidden classes
(a defect class: any one found fails the part).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton_edge.analysis.inspection.verdict import Reason
from lepton_edge.detections import Detections

Point = tuple[float, float]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CountRule(_Strict):
    """How many of `label` the ROI must hold: `exact`, or `min` and/or `max`."""

    label: Annotated[str, Field(min_length=1)]
    min: Annotated[int, Field(ge=0)] | None = None
    max: Annotated[int, Field(ge=0)] | None = None
    exact: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> CountRule:
        if self.exact is not None and (self.min is not None or self.max is not None):
            raise ValueError(f"{self.label}: exact excludes min and max (use one or the other)")
        if self.exact is None and self.min is None and self.max is None:
            raise ValueError(f"{self.label}: give exact, min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.label}: min ({self.min}) must be <= max ({self.max})")
        return self

    @property
    def expected(self) -> str:
        if self.exact is not None:
            return f"== {self.exact}"
        if self.max is None:
            return f">= {self.min}"
        if self.min is None:
            return f"<= {self.max}"
        return f"{self.min}..{self.max}"

    def holds(self, n: int) -> bool:
        if self.exact is not None:
            return n == self.exact
        return (self.min is None or n >= self.min) and (self.max is None or n <= self.max)


class Roi(_Strict):
    """One region and its rules. `rect: [x1, y1, x2, y2]` or `polygon: [[x, y], ...]` in
    source pixels; neither means the whole frame."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    rect: tuple[float, float, float, float] | None = None
    polygon: Annotated[tuple[Point, ...], Field(min_length=3)] | None = None
    membership: Literal["center", "inside"] = "center"
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.0
    count: tuple[CountRule, ...] = ()
    forbidden: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> Roi:
        if self.rect is not None and self.polygon is not None:
            raise ValueError("give rect or polygon, not both")
        if self.rect is not None:
            x1, y1, x2, y2 = self.rect
            if not (x1 < x2 and y1 < y2):
                raise ValueError(f"rect must be [x1, y1, x2, y2] with x1 < x2 and y1 < y2, "
                                 f"got {list(self.rect)}")
        if not self.count and not self.forbidden:
            raise ValueError("an ROI needs at least one rule (count or forbidden)")
        return self

    def outline(self, width: int, height: int) -> np.ndarray:
        """The ROI's polygon (K, 2) float32 in pixels of a `width` x `height` frame."""
        if self.polygon is not None:
            return np.asarray(self.polygon, np.float32)
        x1, y1, x2, y2 = self.rect if self.rect is not None else (0, 0, width, height)
        return np.asarray([(x1, y1), (x2, y1), (x2, y2), (x1, y2)], np.float32)

    @property
    def labels(self) -> set[str]:
        return {r.label for r in self.count} | set(self.forbidden)


def unknown_labels(rois: Sequence[Roi], labels: Sequence[str]) -> list[str]:
    """Labels the rules name that the model does not detect (a typo never passes a part)."""
    known = set(labels)
    return sorted({lab for roi in rois for lab in roi.labels} - known)


def members(roi: Roi, dets: Detections, width: int, height: int) -> np.ndarray:
    """Indices of `dets` inside `roi` with score >= its min_score."""
    if len(dets) == 0:
        return np.zeros(0, np.int64)
    outline = roi.outline(width, height).reshape(-1, 1, 2)
    xyxy = dets.xyxy
    if roi.membership == "center":
        points = [np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], 1)]
    else:
        points = [xyxy[:, [0, 1]], xyxy[:, [2, 1]], xyxy[:, [2, 3]], xyxy[:, [0, 3]]]
    inside = np.ones(len(dets), bool)
    for pts in points:
        inside &= np.array([cv2.pointPolygonTest(outline, (float(x), float(y)), False) >= 0
                            for x, y in pts.tolist()], bool)
    inside &= dets.score >= roi.min_score
    return np.flatnonzero(inside)


def wire(dets: Detections, index: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """Detections `index` as the verdict payload writes them."""
    out = []
    for i in index.tolist():
        c = int(dets.class_id[i])
        out.append({"label": labels[c] if 0 <= c < len(labels) else str(c), "class_id": c,
                    "score": round(float(dets.score[i]), 4),
                    "box": [round(float(v), 1) for v in dets.xyxy[i]]})
    return out


def judge(rois: Sequence[Roi], dets: Detections, labels: Sequence[str], width: int,
          height: int) -> tuple[list[Reason], dict[str, list[dict[str, Any]]]]:
    """Every failed rule (empty: the part passes) and the detections counted per ROI."""
    reasons: list[Reason] = []
    found: dict[str, list[dict[str, Any]]] = {}
    for roi in rois:
        inside = wire(dets, members(roi, dets, width, height), labels)
        found[roi.id] = inside
        names = [d["label"] for d in inside]
        for rule in roi.count:
            n = names.count(rule.label)
            if not rule.holds(n):
                reasons.append(Reason("count", roi.id, f"count {rule.label}", rule.expected, n))
        for label in roi.forbidden:
            n = names.count(label)
            if n:
                reasons.append(Reason("forbidden", roi.id, f"forbidden {label}", "== 0", n))
    return reasons, found
