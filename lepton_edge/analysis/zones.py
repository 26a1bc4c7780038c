"""Zones (polygons with inertia and loitering) and lines (crossings counted once per track,
after N frames on the new side, with per-class in/out counters).

An object's position is its box's bottom centre (where it stands). Polygons and line points
are in source pixels, or all in 0-1 (normalised to the frame) when every coordinate is <= 1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

Point = tuple[float, float]
ID = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneConfig(_Strict):
    """One zone of `zones:`. inertia: consecutive frames inside before the object counts as in
    (and outside before it counts as out); loitering_s: seconds inside before it counts at all
    (0: at once). classes: the labels this zone counts (None: every tracked class)."""

    id: ID
    polygon: Annotated[tuple[Point, ...], Field(min_length=3)]
    classes: tuple[str, ...] | None = None
    inertia: Annotated[int, Field(ge=1, le=100)] = 3
    loitering_s: Annotated[float, Field(ge=0, le=86_400)] = 0.0

    @field_validator("polygon")
    @classmethod
    def _coords(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        return _check_points(v)


class LineConfig(_Strict):
    """One line of `lines:`. "right" is the right hand of someone walking on the image from
    points[0] to points[1] (a line drawn top to bottom: right is the image's left). Crossing to
    `in_side` counts as `in`, the other way as `out`, each at most once per track (a track that
    crosses and comes back counts one in and one out). confirm_frames: consecutive frames on the
    new side before a crossing counts; a crossing beyond the segment's ends is not counted."""

    id: ID
    points: tuple[Point, Point]
    in_side: Literal["left", "right"] = "right"
    classes: tuple[str, ...] | None = None
    confirm_frames: Annotated[int, Field(ge=1, le=100)] = 3
    # A dead band either side of the line, as a fraction of the frame's diagonal: a position
    # closer than this keeps the side it had (someone walking along the line never flips).
    margin: Annotated[float, Field(ge=0, le=0.5)] = 0.01

    @field_validator("points")
    @classmethod
    def _coords(cls, v: tuple[Point, Point]) -> tuple[Point, Point]:
        if v[0] == v[1]:
            raise ValueError("the two points of a line must differ")
        return _check_points(v)  # type: ignore[return-value]


def _check_points(v: Sequence[Point]) -> tuple[Point, ...]:
    if any(c < 0 for p in v for c in p):
        raise ValueError("coordinates must be >= 0 (source pixels, or 0-1 normalised)")
    return tuple(v)


def to_pixels(points: Sequence[Point], width: int, height: int) -> np.ndarray:
    """(K, 2) float32 pixels: points all within 0-1 are scaled to the frame."""
    a = np.asarray(points, np.float32)
    if float(a.max()) <= 1.0:
        a = a * np.array([width, height], np.float32)
    return a


def _counted(classes: tuple[str, ...] | None, label: str) -> bool:
    return classes is None or label in classes


@dataclass
class _Presence:
    inside: bool = False
    run: int = 0  # consecutive frames on the other side of `inside`
    since: float | None = None  # when it was first seen inside in the current stay


class Zone:
    """Membership of tracks in one zone, with inertia and loitering."""

    def __init__(self, cfg: ZoneConfig, width: int, height: int) -> None:
        self.cfg = cfg
        self.polygon = to_pixels(cfg.polygon, width, height).reshape(-1, 1, 2)
        pts = [(float(x), float(y)) for x, y in self.polygon.reshape(-1, 2)]
        self._edges = list(zip(pts, pts[1:] + pts[:1], strict=True))
        self._state: dict[int, _Presence] = {}

    def contains(self, point: Point) -> bool:
        """Inside or on the edge (as cv2.pointPolygonTest(...) >= 0). Plain Python: a call
        into OpenCV releases and retakes the GIL, which on the busy emitting thread cost more
        than the test itself."""
        x, y = float(point[0]), float(point[1])
        inside = False
        for (x1, y1), (x2, y2) in self._edges:
            if (min(x1, x2) <= x <= max(x1, x2) and min(y1, y2) <= y <= max(y1, y2)
                    and abs((x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)) <= 1e-6 * (
                        abs(x2 - x1) + abs(y2 - y1) + 1.0)):
                return True  # on this edge
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def update(self, track_id: int, label: str, point: Point, t: float) -> bool:
        """Whether the track counts as inside after this observation."""
        if not _counted(self.cfg.classes, label):
            return False
        st = self._state.setdefault(track_id, _Presence())
        geometric = self.contains(point)
        if geometric == st.inside:
            st.run = 0
        else:
            st.run += 1
            if st.run >= self.cfg.inertia:
                st.inside, st.run, st.since = geometric, 0, (t if geometric else None)
        return st.inside and st.since is not None and t - st.since >= self.cfg.loitering_s

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)


@dataclass
class _Side:
    side: int = 0  # confirmed side: -1 left, +1 right, 0 unknown yet
    pending: int = 0
    run: int = 0
    counted: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Crossing:
    line: str
    direction: str  # "in" | "out"
    ts: float
    label: str


class Line:
    """Side of each track relative to one line; a crossing counts once per track and direction,
    only after `confirm_frames` consecutive frames on the new side."""

    def __init__(self, cfg: LineConfig, width: int, height: int) -> None:
        self.cfg = cfg
        self.a, self.b = to_pixels(cfg.points, width, height)
        (ax, ay), (bx, by) = self.a.tolist(), self.b.tolist()
        self._a, self._d = (ax, ay), (bx - ax, by - ay)  # plain floats: per-frame arithmetic
        self._length = max(float(np.hypot(bx - ax, by - ay)), 1e-9)
        self.margin = cfg.margin * float(np.hypot(width, height))
        self.counts: dict[str, Counter[str]] = {"in": Counter(), "out": Counter()}
        self._state: dict[int, _Side] = {}

    def side(self, point: Point) -> int:
        """+1 right of a -> b, -1 left, 0 within the margin."""
        (ax, ay), (dx, dy) = self._a, self._d
        cross = dx * (float(point[1]) - ay) - dy * (float(point[0]) - ax)
        if abs(cross) / self._length < self.margin:
            return 0
        return 1 if cross > 0 else -1  # image y points down: > 0 is the right of a -> b

    def _within(self, point: Point) -> bool:
        """Whether the point projects onto the segment (a crossing beyond its ends is none)."""
        (ax, ay), (dx, dy) = self._a, self._d
        u = ((float(point[0]) - ax) * dx + (float(point[1]) - ay) * dy) / max(
            dx * dx + dy * dy, 1e-9)
        return 0.0 <= u <= 1.0

    def update(self, track_id: int, label: str, point: Point, t: float) -> Crossing | None:
        if not _counted(self.cfg.classes, label):
            return None
        st = self._state.setdefault(track_id, _Side())
        s = self.side(point)
        if s == 0:
            return None  # in the dead band: no evidence either way
        if st.side == 0:
            st.side = s
            return None
        if s == st.side:
            st.pending, st.run = 0, 0
            return None
        st.run = st.run + 1 if st.pending == s else 1
        st.pending = s
        if st.run < self.cfg.confirm_frames:
            return None
        st.side, st.pending, st.run = s, 0, 0
        if not self._within(point):
            return None
        right = "in" if self.cfg.in_side == "right" else "out"
        direction = right if s == 1 else ("out" if right == "in" else "in")
        if direction in st.counted:
            return None  # flicker back and forth never counts twice
        st.counted.add(direction)
        self.counts[direction][label] += 1
        return Crossing(self.cfg.id, direction, t, label)

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)
