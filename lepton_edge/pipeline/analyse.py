"""Analysing: each camera's stateful analyser (tracks, zones and events, or an inspection
station) sees the typed detections of its frames in order, after NMS, and returns what to
publish. It also hears its camera's state changes. A camera without one passes through."""

from __future__ import annotations

import dataclasses
import time

from lepton_edge.pipeline.schedule import Scheduler
from lepton_edge.results import FrameResult


class AnalyseStage:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._states: dict[str, str] = {}

    def __call__(self, result: FrameResult, timings: dict[str, float]) -> FrameResult:
        analyser = self._scheduler.analyser(result.camera)
        if analyser is None:
            return result
        t0 = time.perf_counter()
        dets = analyser.analyse(result)
        timings["analyse"] = (time.perf_counter() - t0) * 1000.0
        return dataclasses.replace(result, detections=dets)

    def poll_states(self) -> None:
        """Tell each analyser when its camera's state changed (a lost camera fails the pending
        inspections at once, not at their deadline)."""
        analysers = self._scheduler.analysers()
        for source in self._scheduler.sources():
            state = source.state.value
            if self._states.get(source.id) != state:
                self._states[source.id] = state
                analyser = analysers.get(source.id)
                if analyser is not None:
                    analyser.on_state(state, time.time())

    def failed(self, message: str) -> None:
        """A stage failed: analysers that answer for their frames (inspection stations, with
        `on_error`) answer what is pending with an error."""
        for analyser in self._scheduler.analysers().values():
            on_error = getattr(analyser, "on_error", None)
            if callable(on_error):
                on_error(None, message)

    def close_all(self, reason: str) -> None:
        for analyser in self._scheduler.analysers().values():
            analyser.close(reason)
