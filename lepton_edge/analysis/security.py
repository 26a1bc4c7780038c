"""The security camera's analysing stage: detect rate and motion gate, tracks, zones and lines,
events with snapshots, composed as one `CameraAnalyser` (lepton_edge.results)."""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from lepton_edge.analysis.events import EventBook, EventsConfig, TrackHistory
from lepton_edge.analysis.motion import DetectConfig, FrameGate, MotionConfig
from lepton_edge.analysis.snapshots import SnapshotConfig, SnapshotStore, render
from lepton_edge.analysis.tracking import TrackConfig, Tracker
from lepton_edge.analysis.zones import Line, LineConfig, Zone, ZoneConfig
from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError
from lepton_edge.results import Emit, FrameResult

log = logging.getLogger(__name__)

LOST_STATES = ("retrying", "failed")


class SecurityConfig(BaseModel):
    """The analysis keys of one camera, as they appear on `Camera` (same names, same defaults).
    Defaults keep today's behaviour: every frame inferred, track ids on, no events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    detect: DetectConfig = DetectConfig()
    motion: MotionConfig | None = None
    track: TrackConfig = TrackConfig()
    zones: tuple[ZoneConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()
    events: EventsConfig | None = None
    snapshots: SnapshotConfig = SnapshotConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SecurityConfig:
        ids = [z.id for z in self.zones] + [ln.id for ln in self.lines]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"zones/lines: ids must be unique, {sorted(dup)} used twice")
        if self.events is not None:
            unknown = set(self.events.required_zones) - {z.id for z in self.zones}
            if unknown:
                raise ValueError(f"events.required_zones: {sorted(unknown)} are not in zones "
                                 f"(known: {[z.id for z in self.zones]})")
            if not self.track.enabled:
                raise ValueError("events: need track.enabled: true (an event is a track)")
        if (self.zones or self.lines) and not self.track.enabled:
            raise ValueError("zones/lines: need track.enabled: true (membership is per track)")
        return self


def security_config(cfg: Any) -> SecurityConfig:
    """A SecurityConfig from a `Camera` (or anything with those attributes), or itself."""
    if isinstance(cfg, SecurityConfig):
        return cfg
    fields = {k: getattr(cfg, k) for k in SecurityConfig.model_fields if hasattr(cfg, k)}
    return SecurityConfig(**fields)


class SecurityAnalyser:
    """One camera. `admit`/`analyse` from the pipeline's thread; `on_state`/`close` from any."""

    def __init__(self, camera: str, cfg: SecurityConfig, emit: Emit,
                 store: SnapshotStore | None = None, labels: tuple[str, ...] = ()) -> None:
        self.camera, self.cfg, self._emit = camera, cfg, emit
        self.store = store if cfg.snapshots.enabled else None
        self.gate = FrameGate(cfg.detect, cfg.motion)
        self._labels = labels
        # built now when the labels are known: its imports take a second, not a first frame's
        self._tracker: Tracker | None = (Tracker(cfg.track, labels)
                                         if cfg.track.enabled and labels else None)
        self._zones: list[Zone] = []
        self._lines: list[Line] = []
        self._size: tuple[int, int] | None = None
        self._history: dict[int, TrackHistory] = {}
        snap = self._save_snapshot if self.store is not None else None
        self.events = (EventBook(camera, cfg.events, emit, snap, cfg.snapshots.min_gain)
                       if cfg.events is not None else None)
        self._active = False
        self._lock = threading.RLock()
        self._closed = False
        self.analyse_ms: deque[float] = deque(maxlen=10_000)  # the last frames' cost

    # ------------------------------------------------------------ the CameraAnalyser protocol

    def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool:
        return self.gate.admit(image, t_capture, self._active)

    @property
    def prefilter(self) -> Callable[[float], bool] | None:
        """With a detect rate, its check for the capture thread (lepton_edge.pipeline.sources):
        the frames between are refused before their pixels are retrieved."""
        return self.gate.due if self.cfg.detect.fps is not None else None

    def analyse(self, result: FrameResult) -> Detections:
        t0 = time.perf_counter()
        with self._lock:
            out = self._analyse(result)
        self.analyse_ms.append((time.perf_counter() - t0) * 1000.0)
        return out

    def on_state(self, state: str, ts: float) -> None:
        if state in LOST_STATES:
            with self._lock:
                self._drop_all("camera_lost", ts)

    def close(self, reason: str = "stopping") -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop_all(reason if reason in ("stopping", "camera_lost") else "stopping",
                           time.time())

    # ------------------------------------------------------------ per frame

    @property
    def lines(self) -> list[Line]:
        return self._lines

    def _analyse(self, r: FrameResult) -> Detections:
        if not self.cfg.track.enabled:
            return r.detections
        self._setup(r)
        assert self._tracker is not None
        dets = self._tracker.update(r.detections, r.ts)
        for tr in self._tracker.confirmed():
            if tr.last_t != r.ts:
                continue  # not seen in this frame: zones and lines wait for a sighting
            hist = self._history.setdefault(tr.id, TrackHistory())
            point, label = tr.bottom_centre, tr.label
            zones = tuple(z.cfg.id for z in self._zones if z.update(tr.id, label, point, r.ts))
            hist.entered.extend(z for z in zones if z not in hist.entered)
            hist.zones = zones
            new = [c for ln in self._lines
                   if (c := ln.update(tr.id, label, point, r.ts)) is not None]
            hist.crossings.extend(new)
            if self.events is not None:
                self.events.observe(tr, hist, r.ts, r.image, new)
        for tr in self._tracker.expire(r.ts):
            self._forget(tr.id, "left", r.ts)
        self._active = self._tracker.active(r.ts)
        return dets

    def _setup(self, r: FrameResult) -> None:
        if self._tracker is None:
            self._tracker = Tracker(self.cfg.track, self._labels or r.labels)
        size = (r.width, r.height)
        if size != self._size:  # first frame, or the camera changed resolution
            self._size = size
            self._zones = [Zone(z, *size) for z in self.cfg.zones]
            counts = [ln.counts for ln in self._lines]
            self._lines = [Line(ln, *size) for ln in self.cfg.lines]
            for ln, c in zip(self._lines, counts, strict=False):
                ln.counts = c

    def _forget(self, track_id: int, reason: str, ts: float) -> None:
        if self.events is not None:
            self.events.end(track_id, reason, ts)
            self.events.forget([track_id])
        self._history.pop(track_id, None)
        for z in self._zones:
            z.forget(track_id)
        for ln in self._lines:
            ln.forget(track_id)

    def _drop_all(self, reason: str, ts: float) -> None:
        if self._tracker is None:
            return
        for tr in self._tracker.reset():
            self._forget(tr.id, reason, ts)
        self._active = False

    def _save_snapshot(self, event_id: str, image: np.ndarray, box: np.ndarray,
                       caption: str) -> str | None:
        assert self.store is not None
        name = f"{self.camera}-{event_id}.jpg"
        try:
            self.store.save(name, render(image, box, self.cfg.snapshots, caption),
                            self.cfg.snapshots.quality)
        except (ConfigError, ValueError) as err:
            log.warning("%s: snapshot not kept: %s", self.camera, err)
            return None
        return name

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per line: {"in": {label: n}, "out": {label: n}}."""
        return {ln.cfg.id: {d: dict(c) for d, c in ln.counts.items()} for ln in self._lines}


def build_security_analyser(camera_id: str, cfg: Any, emit: Emit,
                            snapshot_store: SnapshotStore | None,
                            labels: tuple[str, ...] = ()) -> SecurityAnalyser:
    """The analyser of one camera. cfg: a `Camera` with the analysis fields, or a
    SecurityConfig; labels: the model's class names (else taken from each FrameResult).

    Raises ConfigError when tracking is asked for (track, zones, lines or events configured)
    and the `trackers` package is missing; with nothing configured, tracking is left off with
    a warning instead (today's behaviour: boxes without track ids)."""
    config = security_config(cfg)
    if config.track.enabled and importlib.util.find_spec("trackers") is None:
        asked = "track" in config.model_fields_set or config.zones or config.lines or config.events
        if asked:
            raise ConfigError(f"cameras[{camera_id}]: tracking needs the `trackers` package; "
                              "install the extra: pip install 'lepton-edge[analysis]'")
        log.warning("%s: no track ids: the `trackers` package is not installed "
                    "(pip install 'lepton-edge[analysis]')", camera_id)
        config = config.model_copy(update={"track": config.track.model_copy(
            update={"enabled": False})})
    return SecurityAnalyser(camera_id, config, emit, snapshot_store, labels)
