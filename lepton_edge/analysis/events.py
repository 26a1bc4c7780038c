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
from dataclasses import dataclass, field, replace
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
class _Open:
    event: Event
    snapshot_ts: float


@dataclass
class TrackHistory:
    """What a track did before and during its event: zones it entered, lines it crossed."""

    zones: tuple[str, ...] = ()
    entered: list[str] = field(default_factory=list)
    crossings: list[Crossing] = field(default_factory=list)


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
        ev = cur.event
        changed = hist.zones != ev.zones or bool(new_crossings)
        better = tr.score >= ev.top_score + self.min_gain
        snapshot = ev.snapshot
        if better and ts - cur.snapshot_ts >= self.cfg.snapshot_interval_s:
            snapshot = self._snapshot(ev.event_id, image, tr) or snapshot
            cur.snapshot_ts = ts
            changed = True
        top = max(ev.top_score, tr.score)
        nxt = replace(ev, type="update", score=tr.score, top_score=top, ts=ts,
                      box=_box(tr.box), zones=hist.zones, entered_zones=tuple(hist.entered),
                      lines_crossed=tuple(hist.crossings), snapshot=snapshot, label=tr.label)
        cur.event = nxt
        if changed:
            self._emit(nxt)
        if self.cfg.max_duration_s is not None and ts - ev.ts_start > self.cfg.max_duration_s:
            self.end(tr.id, "timeout", ts)

    def _start(self, tr: Track, hist: TrackHistory, ts: float, image: np.ndarray) -> None:
        event_id = f"{int(ts * 1000):x}-{tr.id}-{secrets.token_hex(3)}"
        ev = Event(self.camera, "start", event_id, tr.id, tr.label, tr.score, tr.score, ts, ts,
                   _box(tr.box), hist.zones, tuple(hist.entered), tuple(hist.crossings))
        ev = replace(ev, snapshot=self._snapshot(event_id, image, tr))
        self.open[tr.id] = _Open(ev, ts)
        self.started += 1
        self._emit(ev)

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
        self._emit(replace(cur.event, type="end", ts=ts, ts_end=ts, reason=reason))

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
