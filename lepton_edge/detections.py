"""`Detections`: the result of one frame, as numpy arrays (never lists of dicts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Boxes of one frame in source pixels.

    xyxy: (N, 4) float32, x1 y1 x2 y2. score: (N,) float32 in 0..1. class_id: (N,) int32.
    track_id: (N,) int64 or None; set by the tracker (analysis stage), -1 for a detection that
    belongs to no track (an untracked class, or a tentative track).
    Index with a boolean mask or integer array to filter: `dets[dets.score > 0.5]`.
    """

    xyxy: np.ndarray
    score: np.ndarray
    class_id: np.ndarray
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.xyxy.shape[0] if self.xyxy.ndim == 2 else -1
        if self.xyxy.ndim != 2 or self.xyxy.shape[1] != 4:
            raise ValueError(f"xyxy must have shape (N, 4), got {self.xyxy.shape}")
        if self.score.shape != (n,):
            raise ValueError(f"score must have shape ({n},), got {self.score.shape}")
        if self.class_id.shape != (n,):
            raise ValueError(f"class_id must have shape ({n},), got {self.class_id.shape}")
        if self.track_id is not None and self.track_id.shape != (n,):
            raise ValueError(f"track_id must have shape ({n},), got {self.track_id.shape}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def __getitem__(self, index: np.ndarray | slice | int) -> Detections:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        track = None if self.track_id is None else self.track_id[index]
        return Detections(self.xyxy[index], self.score[index], self.class_id[index], track)

    def with_tracks(self, track_id: np.ndarray) -> Detections:
        """The same boxes with `track_id` (N,) set (a new value; this one is frozen)."""
        return Detections(self.xyxy, self.score, self.class_id,
                          np.asarray(track_id, dtype=np.int64))
