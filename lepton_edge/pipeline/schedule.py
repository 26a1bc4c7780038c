"""Scheduling: which captured frame is inferred next.

Frames are taken round-robin across cameras (each source's mailbox holds the newest frame of a
live camera, or every frame of a bench file), and each camera's analyser decides, before any
letterbox work, whether the frame is inferred at all (detect rate, motion gate, inspection
triggers). A frame it does not admit costs its capture and the analyser's check, nothing more.
"""

from __future__ import annotations

import threading

from lepton_edge.pipeline.sources import Frame, Source
from lepton_edge.pipeline.stats import RunStats
from lepton_edge.results import CameraAnalyser


class Scheduler:
    def __init__(self, stats: RunStats) -> None:
        self.ready = threading.Condition()  # sources notify it when a frame arrives
        self._sources: dict[str, Source] = {}
        self._analysers: dict[str, CameraAnalyser] = {}
        self._stats = stats
        self._rr = 0

    def add(self, source: Source, analyser: CameraAnalyser | None) -> None:
        """Before `source.start()`: an analyser with a time-only check (`prefilter`, a detect
        rate) gets it asked in the capture thread, before a frame's pixels are retrieved."""
        with self.ready:
            self._sources[source.id] = source
            if analyser is not None:
                self._analysers[source.id] = analyser
                source.prefilter = getattr(analyser, "prefilter", None)
        self._stats.camera(source.id)

    def remove(self, camera_id: str) -> tuple[Source | None, CameraAnalyser | None]:
        with self.ready:
            return self._sources.pop(camera_id, None), self._analysers.pop(camera_id, None)

    def sources(self) -> list[Source]:
        with self.ready:
            return list(self._sources.values())

    def analyser(self, camera_id: str) -> CameraAnalyser | None:
        return self._analysers.get(camera_id)

    def analysers(self) -> dict[str, CameraAnalyser]:
        with self.ready:
            return dict(self._analysers)

    def next_frame(self, stopping: threading.Event) -> Frame | None:
        """The next admitted frame, round-robin across cameras; None when the frame taken was
        not admitted, or after a short wait when no camera has one."""
        frame = self._take(stopping)
        if frame is None:
            return None
        analyser = self._analysers.get(frame.camera)
        # Outside the lock: capture threads hand over frames meanwhile.
        if analyser is not None and not analyser.admit(frame.image, frame.index, frame.t_capture):
            self._stats.skipped(frame.camera)
            return None
        return frame

    def _take(self, stopping: threading.Event) -> Frame | None:
        with self.ready:
            srcs = list(self._sources.values())
            for k in range(len(srcs)):
                frame = srcs[(self._rr + k) % len(srcs)].take()
                if frame is not None:
                    self._rr = (self._rr + k + 1) % len(srcs)
                    return frame
            if not stopping.is_set():
                self.ready.wait(0.1)
        return None

    def all_done(self) -> bool:
        srcs = self.sources()
        return bool(srcs) and all(s.done for s in srcs)

    def any_waiting(self) -> bool:
        return any(s.has_frame for s in self.sources())
