"""Which captured frames are inferred: the detect rate and a cheap motion gate.

The gate follows Frigate's motion detector: the frame in grayscale at `frame_height` rows,
blurred, compared with a running average (`alpha`); pixels that differ by more than
`threshold` are dilated into contours, and one larger than `contour_area` (pixels at that
resolution) is motion. A change over `recalibrate_fraction` of the frame at once (lights, an IR
switch) resets the average instead of firing. Inference still runs every `keepalive_s` (so
stationary objects stay tracked) and on every frame while a track is forming or moving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class DetectConfig(BaseModel):
    """`detect:` of a camera. fps: inferred frames per second at most (None: every frame)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: Annotated[float, Field(gt=0, le=240)] | None = None


class MotionConfig(BaseModel):
    """`motion:` of a camera (Frigate's defaults: threshold 30, contour area 10, height 100)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    threshold: Annotated[int, Field(ge=1, le=255)] = 30
    contour_area: Annotated[int, Field(ge=1, le=100_000)] = 10
    frame_height: Annotated[int, Field(ge=16, le=1080)] = 100
    alpha: Annotated[float, Field(gt=0, le=1)] = 0.02
    recalibrate_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    calibration_frames: Annotated[int, Field(ge=1, le=100)] = 3
    keepalive_s: Annotated[float, Field(gt=0, le=3600)] = 3.0


class MotionDetector:
    """Motion in a frame against the running average of the frames before it."""

    def __init__(self, cfg: MotionConfig) -> None:
        self.cfg = cfg
        self._avg: np.ndarray | None = None
        self._calibrating = 0
        self._kernel = np.ones((3, 3), np.uint8)
        self.recalibrations = 0

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        size = (max(1, round(w * self.cfg.frame_height / h)), self.cfg.frame_height)
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        # INTER_LINEAR as Frigate: 0.1 ms at 768x576 against 1 ms for INTER_AREA; the blur
        # below averages the sensor noise that area resampling would have.
        small = cv2.resize(gray, size, interpolation=cv2.INTER_LINEAR)
        return cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)

    def __call__(self, image: np.ndarray) -> bool:
        small = self._small(image)
        if self._avg is None or self._avg.shape != small.shape or self._calibrating:
            self._avg = small
            self._calibrating = max(0, self._calibrating - 1)
            return False
        delta = cv2.absdiff(small, self._avg)
        cv2.accumulateWeighted(small, self._avg, self.cfg.alpha)
        mask = (delta > self.cfg.threshold).astype(np.uint8)
        if mask.mean() > self.cfg.recalibrate_fraction:
            self._avg = small
            self._calibrating = self.cfg.calibration_frames
            self.recalibrations += 1
            return False
        grown = cv2.dilate(mask, self._kernel, iterations=2)
        contours, _ = cv2.findContours(grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        return any(cv2.contourArea(c) > self.cfg.contour_area for c in contours)


@dataclass
class GateStats:
    seen: int = 0
    inferred: int = 0
    skipped_rate: int = 0
    skipped_still: int = 0

    @property
    def fraction(self) -> float:
        return self.inferred / self.seen if self.seen else 0.0


class FrameGate:
    """`admit` for one camera: the detect rate first, then motion (when enabled)."""

    def __init__(self, detect: DetectConfig, motion: MotionConfig | None) -> None:
        self.detect = detect
        self.motion = None if motion is None or not motion.enabled else MotionDetector(motion)
        self.keepalive_s = motion.keepalive_s if motion is not None else 0.0
        self._next_t: float | None = None
        self._last_inferred_t: float | None = None
        self._rate_outside = False  # `due` checks the rate (in the capture thread)
        self.stats = GateStats()

    def _due(self, t: float, period: float) -> bool:
        """The detect rate on average, not per gap: 25 fps at fps 10 keeps frames 0, 3, 5, 8,
        10... (10 a second), where 'at least 0.1 s apart' would keep every third (8.3)."""
        if self._next_t is not None and t < self._next_t - 0.05 * period:
            return False
        late = self._next_t is None or t - self._next_t >= period
        self._next_t = (t if late else self._next_t) + period  # type: ignore[operator]
        return True

    def due(self, t: float) -> bool:
        """The detect-rate half of `admit`, on its own: the capture thread asks it before it
        retrieves a frame's pixels, and from the first call on `admit` leaves the rate to it
        (the motion half needs the pixels)."""
        self._rate_outside = True
        return self._rate(t)

    def _rate(self, t: float) -> bool:
        self.stats.seen += 1
        if self.detect.fps is not None and not self._due(t, 1.0 / self.detect.fps):
            self.stats.skipped_rate += 1
            return False
        return True

    def admit(self, image: np.ndarray, t: float, tracks_active: bool) -> bool:
        if not self._rate_outside and not self._rate(t):
            return False
        if self.motion is not None:
            moving = self.motion(image)  # always, so the average follows the scene
            due = self._last_inferred_t is None or t - self._last_inferred_t >= self.keepalive_s
            if not (moving or tracks_active or due):
                self.stats.skipped_still += 1
                return False
        self._last_inferred_t = t
        self.stats.inferred += 1
        return True
