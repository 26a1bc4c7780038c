"""Events of tracked objects: the false-alarm filter, then start / update / end on
`event.<camera>`, with the best snapshot.

A track becomes an event once it is confirmed, its median score over its last frames reaches
the threshold of its label, its box is at least the minimum area of its label, it has moved
`min_travel` box heights from where it was first seen (a parked car is no alarm) and (when
`required_zones` is set) it counts as inside one of those zones. Updates go out only on a
change that matters: the zones it is in, a line crossed, a better snapshot (at most every
`snapshot_interval_s`). An event ends with a reason: "left" (the track was unseen for the
track timeout), "timeout" (longer than `max_duration_s`), "camera_lost", "stopping". A track
starts at most one event in its life.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lepton_edge.analysis.tracking import Track
from lepton_edge.analysis.zones import Crossing

Score = Annotated[float, Field(gt=0, le=1)]


class EventsConfig(BaseModel):
    """`events:` of a camera. labels: which labels make events (None: every tracked one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    labels: tuple[str, ...] | None = None
    min_score: Score = 0.5
    scores: dict[str, Score] = Field(default_factory=dict)  # per-label thresholds
    min_area: Annotated[float, Field(ge=0)] = 0.0  # box area in source pixels
    min_areas: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    required_zones: tuple[str, ...] = ()
    # How far (in its own box heights) a track must have moved from where it was first seen
    # before it can become an event: a car parked since the camera started, a statue or a
    # poster detected as a person never alarm. 0: no such filter.
    min_travel: Annotated[float, Field(ge=0, le=100)] = 0.5
    max_duration_s: Annotated[float, Field(gt=0)] | None = None
    snapshot_interval_s: Annotated[float, Field(ge=0)] = 1.0

    def threshold(self, label: str) -> float:
        return self.scores.get(label, self.min_score)

    def area(self, label: str) -> float:
        return self.min_areas.get(label, self.min_area)


@dataclass(frozen=True)
class Event:
    """One event message (an `Outcome`): see the module docstring and INTERFACES."""

    camera: str
    type: Literal["start", "update", "end"]
    event_id: str
    track_id: int
    label: str
    score: float
    top_score: float
    ts: float
    ts_start: float
    box: tuple[float, float, float, float]
    zones: tuple[str, ...] = ()
    entered_zones: tuple[str, ...] = ()
    lines_crossed: tuple[Crossing, ...] = ()
    snapshot: str | None = None
    ts_end: float | None = None
    reason: str | None = None

    @property
    def topic(self) -> str:
        return f"event.{self.camera}"

    def as_dict(self) -> dict[str, Any]:
        return {"v": 1, "type": self.type, "event_id": self.event_id, "camera": self.camera,
                "track_id": self.track_id, "label": self.label, "score": round(self.score, 4),
                "top_score": round(self.top_score, 4), "ts": self.ts, "ts_start": self.ts_start,
                "ts_end": self.ts_end, "box": [round(v, 1) for v in self.box],
                "zones": list(self.zones), "entered_zones": list(self.entered_zones),
                "lines_crossed": [{"line": c.line, "direction": c.direction, "ts": c.ts}
                                  for c in self.lines_crossed],
                "snapshot": self.snapshot, "reason": self.reason}

    def to_payload(self) -> bytes:
        return json.dumps(self.as_dict(), separators=(",", ":")).encode()


@dataclass
class TrackHistory:
    """What a track did before and during its event: zones it entered, lines it crossed."""

    zones: tuple[str, ...] = ()
    entered: list[str] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)


@dataclass
class _Open:
    """An open event: the track and its history as last seen, folded into a message only when
    one goes out (an update that matters, or the end), not on every frame."""

    camera: str
    event_id: str
    ts_start: float
    track: Track
    hist: TrackHistory
    ts: float  # last sighting
    top: float
    zones: tuple[str, ...]  # at the last sighting: a change is an update
    snapshot: str | None
    snapshot_ts: float

    def message(self, type_: Literal["start", "update", "end"], **end: Any) -> Event:
        tr, h = self.track, self.hist
        return Event(self.camera, type_, self.event_id, tr.id, tr.label, tr.score, self.top,
                     self.ts, self.ts_start, _box(tr.box), h.zones, tuple(h.entered),
                     tuple(h.crossings), self.snapshot, **end)


# (event_id, image, box, caption) -> snapshot name, or None when not kept
Snap = Callable[[str, np.ndarray, np.ndarray, str], "str | None"]


class EventBook:
    """Open events of one camera, keyed by track id."""

    def __init__(self, camera: str, cfg: EventsConfig, emit: Callable[[Any], None],
                 snap: Snap | None = None, min_gain: float = 0.05) -> None:
        self.camera, self.cfg, self._emit, self._snap = camera, cfg, emit, snap
        self.min_gain = min_gain
        self.open: dict[int, _Open] = {}
        self._done: set[int] = set()  # tracks that had their event: never a second one
        self.started = 0
        self.ended = 0

    def qualifies(self, tr: Track, hist: TrackHistory) -> bool:
        label = tr.label
        if self.cfg.labels is not None and label not in self.cfg.labels:
            return False
        x1, y1, x2, y2 = (float(v) for v in tr.box)
        if (x2 - x1) * (y2 - y1) < self.cfg.area(label):
            return False
        if tr.median_score < self.cfg.threshold(label) or tr.travel < self.cfg.min_travel:
            return False
        return not self.cfg.required_zones or bool(set(hist.zones) & set(self.cfg.required_zones))

    def observe(self, tr: Track, hist: TrackHistory, ts: float, image: np.ndarray,
                new_crossings: Sequence[Crossing] = ()) -> None:
        """One frame of a confirmed track: start, update or nothing."""
        if tr.id in self._done:
            return
        cur = self.open.get(tr.id)
        if cur is None:
            if self.cfg.enabled and self.qualifies(tr, hist):
                self._start(tr, hist, ts, image)
            return
        changed = hist.zones != cur.zones or bool(new_crossings)
        better = tr.score >= cur.top + self.min_gain
        if better and ts - cur.snapshot_ts >= self.cfg.snapshot_interval_s:
            cur.snapshot = self._snapshot(cur.event_id, image, tr) or cur.snapshot
            cur.snapshot_ts = ts
            changed = True
        cur.top = max(cur.top, tr.score)
        cur.ts, cur.zones, cur.track, cur.hist = ts, hist.zones, tr, hist
        if changed:
            self._emit(cur.message("update"))
        if self.cfg.max_duration_s is not None and ts - cur.ts_start > self.cfg.max_duration_s:
            self.end(tr.id, "timeout", ts)

    def _start(self, tr: Track, hist: TrackHistory, ts: float, image: np.ndarray) -> None:
        event_id = f"{int(ts * 1000):x}-{tr.id}-{secrets.token_hex(3)}"
        cur = _Open(self.camera, event_id, ts, tr, hist, ts, tr.score, hist.zones,
                    self._snapshot(event_id, image, tr), ts)
        self.open[tr.id] = cur
        self.started += 1
        self._emit(cur.message("start"))

    def _snapshot(self, event_id: str, image: np.ndarray, tr: Track) -> str | None:
        if self._snap is None:
            return None
        return self._snap(event_id, image, tr.box, f"{tr.label} {tr.score:.2f}")

    def end(self, track_id: int, reason: str, ts: float) -> None:
        cur = self.open.pop(track_id, None)
        if cur is None:
            return
        self._done.add(track_id)
        self.ended += 1
        cur.ts = ts
        self._emit(cur.message("end", ts_end=ts, reason=reason))

    def end_all(self, reason: str, ts: float) -> None:
        for track_id in list(self.open):
            self.end(track_id, reason, ts)

    def forget(self, track_ids: Mapping[int, Any] | Sequence[int]) -> None:
        """Tracks the tracker dropped for good (their ids are never reused)."""
        for t in track_ids:
            self._done.discard(int(t))


def _box(xyxy: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return x1, y1, x2, y2
