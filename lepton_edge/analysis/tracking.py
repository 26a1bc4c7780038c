"""Tracks: ByteTrack from Roboflow's `trackers` library, wrapped with what events need.

Why ByteTrack (`trackers` 2.1) over norfair: on the TUD-Campus ground truth that `motmetrics`
ships, with detections derived from it (5% jitter, 10% misses, 0.3 false positives a frame, 5
seeds), the bare libraries scored: ByteTrack IDF1 0.903 / MOTA 0.867 at 25 fps and 0.806 /
0.726 at 5 fps (tuned); norfair (IoU or size-normalised distance, tuned) 0.92 / 0.84 at 25 fps
but at most 0.50 / 0.04 at 5 fps (its coasting estimates become false positives), at 0.3-0.5 ms
against 0.6-0.9 ms a frame. norfair 2.3 also pins numpy < 2. Through this wrapper (with its
confirmation, 5 seeds): library defaults 0.905 / 0.870 (25 fps), 0.777 / 0.688 (5 fps);
these defaults 0.908 / 0.875 and 0.807 / 0.720 (tests/analysis/test_tracking.py).

`trackers` >= 2.2 requires the GUI build of OpenCV (`opencv-python`), which clashes with the
headless build a camera box runs, hence the pin below 2.2.

On top of the library: class groups (classes that overlap as one object, e.g. car/truck/bus,
are first merged by class-agnostic NMS, so one vehicle is one track) tracked apart in one
ByteTrack: each group's boxes are shifted into their own band of x (`GROUP_SHIFT` pixels
apart), so no box of one group ever overlaps a track of another, the offset trick of batched
NMS. One library call a frame instead of one per group that was ever seen (its per-call cost,
supervision `Detections` copies and merges, is most of the tracker's time). Global
track ids, a track's label by majority over its frames, its recent scores (for the median
filter), confirmation after `confirm_frames` hits and an end after `timeout_s` seconds unseen
(seconds, not frames: cameras and the motion gate change the frame rate).
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError
from lepton_edge.pipeline.nms import nms

DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (("car", "truck", "bus"),)
# x distance between class groups inside the one ByteTrack: more than any frame is wide (a
# box grown by `buffer` included), small enough that float32 keeps a hundredth of a pixel.
GROUP_SHIFT = 100_000.0


class TrackConfig(BaseModel):
    """`track:` of a camera. classes: the labels tracked (None: every class)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    classes: tuple[str, ...] | None = None
    # Labels that are one physical object when their boxes overlap (a parked car seen as car
    # and truck): merged by class-agnostic NMS at `group_iou`, tracked as one.
    class_groups: tuple[tuple[str, ...], ...] = DEFAULT_GROUPS
    group_iou: Annotated[float, Field(gt=0, le=1)] = 0.6
    # Frames seen before a track is confirmed (gets its id on `det.`, may become an event);
    # at least 2 in effect: ByteTrack numbers a track from its second frame.
    confirm_frames: Annotated[int, Field(ge=1, le=100)] = 2
    # Seconds unseen before a track ends; longer than motion.keepalive_s, or a stationary
    # object on a still scene would end between two inferred frames.
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    # ByteTrack settings (trackers.ByteTrackTracker); the defaults are the tuned ones, the
    # library's are 0.7 / 0.6 / 30 (see the module docstring for the figures).
    activation_score: Annotated[float, Field(gt=0, lt=1)] = 0.6
    high_score: Annotated[float, Field(gt=0, lt=1)] = 0.5
    min_iou: Annotated[float, Field(ge=0, lt=1)] = 0.1
    lost_buffer: Annotated[int, Field(ge=1, le=10_000)] = 60
    score_window: Annotated[int, Field(ge=1, le=100)] = 10
    stationary_s: Annotated[float, Field(gt=0, le=600)] = 2.0
    # Buffered IoU (C-BIoU): boxes are matched grown by this fraction of their size on each
    # side, so a fast object still overlaps its last position at a low detect rate. The
    # published boxes are the detector's own.
    buffer: Annotated[float, Field(ge=0, le=5)] = 0.0


@dataclass
class Track:
    """One tracked object. box: last seen xyxy (source pixels); scores: the last frames'."""

    id: int
    first_t: float
    last_t: float
    box: np.ndarray
    scores: deque[float]
    hits: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    path: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=64))
    origin: tuple[float, float] | None = None
    travel: float = 0.0  # farthest its bottom centre got from where it was first seen, in heights

    @property
    def label(self) -> str:
        # the most frequent, the first seen among equals (as Counter.most_common), cheaper
        return max(self.labels, key=self.labels.__getitem__)

    @property
    def score(self) -> float:
        return self.scores[-1]

    @property
    def median_score(self) -> float:
        return float(statistics.median(self.scores))

    @property
    def bottom_centre(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[3])

    def moved(self, t: float, window_s: float) -> bool:
        """Whether its bottom centre moved over 10% of its box height in the last `window_s`."""
        x, y = self.bottom_centre
        limit = 0.1 * float(self.box[3] - self.box[1])
        for pt, px, py in reversed(self.path):  # newest first: stop at the window's start
            if t - pt > window_s:
                return False
            if abs(x - px) + abs(y - py) > limit:
                return True
        return False


def _bytetrack(cfg: TrackConfig) -> Any:
    try:
        from trackers import ByteTrackTracker
    except ImportError as err:
        raise ConfigError("track: tracking needs the `trackers` package; install the extra: "
                          "pip install 'lepton-edge[analysis]'") from err
    return _lean(ByteTrackTracker)(
        lost_track_buffer=cfg.lost_buffer, frame_rate=30.0,
        track_activation_threshold=cfg.activation_score, minimum_consecutive_frames=1,
        minimum_iou_threshold=cfg.min_iou, high_conf_det_threshold=cfg.high_score)


_LEAN: dict[type, type] = {}


def _lean(base: type) -> type:
    """The library's ByteTrack with one step made cheap: a detection matched to a track is
    recorded in `matched` as (its `class_id`, the track's id) instead of becoming a
    deep-copied one-row `sv.Detections` that `update` then merges (that copy and merge were
    half of the tracker's time). The association itself is the library's; this is
    `_update_detections` of trackers 2.1 (pinned below 2.2) without the copy, and
    tests/analysis/test_tracking.py checks it assigns what the library does."""
    if base not in _LEAN:
        from trackers.core.bytetrack.kalman_box_tracker import ByteTrackKalmanBoxTracker

        class LeanByteTrack(base):  # type: ignore[misc, valid-type]
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self.matched: list[tuple[int, int]] = []

            def _update_detections(self, tracks: list[Any], detections: Any,
                                   updated_detections: list[Any],
                                   matched_indices: list[tuple[int, int]]) -> list[Any]:
                boxes, index = detections.xyxy, detections.class_id
                for row, col in matched_indices:
                    t = tracks[row]
                    t.update(boxes[col])
                    if (t.number_of_successful_updates >= self.minimum_consecutive_frames
                            and t.tracker_id == -1):
                        t.tracker_id = ByteTrackKalmanBoxTracker.get_next_tracker_id()
                    self.matched.append((int(index[col]), int(t.tracker_id)))
                return updated_detections

        _LEAN[base] = LeanByteTrack
    return _LEAN[base]


def _grow(xyxy: np.ndarray, buffer: float) -> np.ndarray:
    xyxy = xyxy.astype(np.float32)
    if buffer <= 0:
        return xyxy
    wh = (xyxy[:, 2:] - xyxy[:, :2]) * buffer
    return np.concatenate([xyxy[:, :2] - wh, xyxy[:, 2:] + wh], axis=1)


def merge_groups(dets: Detections, labels: Sequence[str],
                 groups: Sequence[Sequence[str]], iou: float) -> Detections:
    """Class-agnostic NMS inside each class group: of a car and a truck box on one vehicle only
    the higher-scoring stays. Classes outside every group are untouched."""
    return _merge(dets, group_members(labels, groups), iou)


def group_members(labels: Sequence[str], groups: Sequence[Sequence[str]]) -> np.ndarray:
    """Per class id: the index of the class group it belongs to, -1 for none."""
    member = np.full(len(labels), -1, np.int64)
    for g, names in enumerate(groups):
        for c, name in enumerate(labels):
            if name in names and member[c] < 0:
                member[c] = g
    return member


def _merge(dets: Detections, member: np.ndarray, iou: float) -> Detections:
    if len(dets) < 2 or not member.size:
        return dets
    c = dets.class_id
    known = (c >= 0) & (c < len(member))
    g = np.where(known, member[np.where(known, c, 0)], -1)
    if np.count_nonzero(g >= 0) < 2:
        return dets  # the common frame: at most one box of any group
    keep = np.ones(len(dets), bool)
    for group in np.unique(g[g >= 0]):
        idx = np.flatnonzero(g == group)
        if idx.size > 1:
            kept = idx[nms(dets.xyxy[idx], dets.score[idx], iou)]
            keep[idx] = False
            keep[kept] = True
    return dets if keep.all() else dets[keep]


class Tracker:
    """Tracks of one camera. `update` once per inferred frame, in order."""

    def __init__(self, cfg: TrackConfig, labels: Sequence[str]) -> None:
        import supervision  # imported here, at setup: its first import takes about a second

        self._sv = supervision
        self.cfg = cfg
        self.labels = tuple(labels)
        self.tracks: dict[int, Track] = {}
        self._engine = _bytetrack(cfg)
        self._ids: dict[tuple[int, int], int] = {}
        self._next = 1
        # per class id: its class group (-1 outside every group: `_members`, what merging
        # reads); for tracking, a class outside every group is a group of its own
        # (`_group_lut`); and whether it is tracked
        n = len(self.labels)
        self._members = group_members(self.labels, cfg.class_groups)
        self._group_lut = np.where(self._members >= 0, self._members,
                                   len(cfg.class_groups) + np.arange(n, dtype=np.int64))
        self._tracked_lut = np.array([cfg.classes is None or name in cfg.classes
                                      for name in self.labels], bool) if n else np.zeros(0, bool)

    def _group(self, class_id: int) -> int:
        if 0 <= class_id < len(self._group_lut):
            return int(self._group_lut[class_id])
        return len(self.cfg.class_groups) + class_id

    def _groups(self, class_id: np.ndarray) -> np.ndarray:
        known = (class_id >= 0) & (class_id < len(self._group_lut))
        if known.all():
            return self._group_lut[class_id]
        return np.array([self._group(int(c)) for c in class_id], np.int64)

    def _tracked(self, dets: Detections) -> np.ndarray:
        c = dets.class_id
        known = (c >= 0) & (c < len(self._tracked_lut))
        if known.all():
            return self._tracked_lut[c]
        names = [self.labels[int(i)] if k else str(int(i)) for i, k in zip(c, known, strict=True)]
        return np.array([self.cfg.classes is None or n in self.cfg.classes for n in names], bool)

    def update(self, dets: Detections, t: float) -> Detections:
        """Merge class groups, associate, and return the detections with `track_id` (-1 for an
        untracked class or a track not yet confirmed)."""
        dets = _merge(dets, self._members, self.cfg.group_iou)
        ids = np.full(len(dets), -1, np.int64)
        sel = np.flatnonzero(self._tracked(dets))
        groups = self._groups(dets.class_id)
        boxes = _grow(dets.xyxy[sel], self.cfg.buffer)
        boxes[:, [0, 2]] += (groups[sel] * GROUP_SHIFT)[:, None].astype(np.float32)
        # ByteTrack ignores classes: `class_id` carries each box's index in `dets` through it.
        # Only a matched box has a track id (a new track gets its id on its second frame), so
        # the library's own return value, the unmatched boxes at -1, is not needed.
        engine = self._engine
        engine.matched.clear()
        engine.update(self._sv.Detections(xyxy=boxes, confidence=dets.score[sel],
                                          class_id=sel))
        for i, lib_id in engine.matched:
            if lib_id >= 0:
                ids[i] = self._observe(int(groups[i]), lib_id, dets, i, t)
        return dets.with_tracks(np.where([self._confirmed(int(i)) for i in ids], ids, -1))

    def _confirmed(self, track_id: int) -> bool:
        tr = self.tracks.get(int(track_id))
        return tr is not None and self._is_confirmed(tr)

    def _is_confirmed(self, tr: Track) -> bool:
        # ByteTrack gives a new track its id on its second frame: the first counts as seen.
        return tr.hits + 1 >= self.cfg.confirm_frames

    def _observe(self, group: int, lib_id: int, dets: Detections, i: int, t: float) -> int:
        key = (group, lib_id)
        tid = self._ids.get(key)
        if tid is None or tid not in self.tracks:
            tid = self._ids[key] = self._next
            self._next += 1
            self.tracks[tid] = Track(tid, t, t, dets.xyxy[i].copy(),
                                     deque(maxlen=self.cfg.score_window))
        tr = self.tracks[tid]
        tr.hits += 1
        tr.last_t, tr.box = t, dets.xyxy[i].copy()
        tr.scores.append(float(dets.score[i]))
        tr.labels[self.labels[dets.class_id[i]] if 0 <= dets.class_id[i] < len(self.labels)
                  else str(dets.class_id[i])] += 1
        x, y = tr.bottom_centre
        tr.path.append((t, x, y))
        if tr.origin is None:
            tr.origin = (x, y)
        h = max(1.0, float(tr.box[3] - tr.box[1]))
        tr.travel = max(tr.travel, float(np.hypot(x - tr.origin[0], y - tr.origin[1])) / h)
        return tid

    def confirmed(self) -> list[Track]:
        return [tr for tr in self.tracks.values() if self._is_confirmed(tr)]

    def expire(self, t: float) -> list[Track]:
        """Remove and return the tracks unseen for `timeout_s`."""
        gone = [tr for tr in self.tracks.values() if t - tr.last_t > self.cfg.timeout_s]
        for tr in gone:
            del self.tracks[tr.id]
        if gone:
            ended = {tr.id for tr in gone}
            self._ids = {k: v for k, v in self._ids.items() if v not in ended}
        return gone

    def active(self, t: float) -> bool:
        """A track seen lately that is still forming or moving: the motion gate keeps
        inferring every frame (a stationary one is left to the keepalive)."""
        window = self.cfg.stationary_s
        return any(t - tr.last_t <= window
                   and (not self._is_confirmed(tr) or tr.moved(t, window))
                   for tr in self.tracks.values())

    def reset(self) -> list[Track]:
        """Forget everything (camera lost); returns the tracks that were open."""
        gone = list(self.tracks.values())
        self.tracks.clear()
        self._engine = _bytetrack(self.cfg)
        self._ids.clear()
        return gone
