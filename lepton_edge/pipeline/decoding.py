"""Decoding: a model family's raw output into `Detections` in source pixels (score filter,
NMS), with settings a SIGHUP reload may swap between frames."""

from __future__ import annotations

import time

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.pipeline.decode import DecodeSettings, get_decoder
from lepton_edge.pipeline.preprocess import LetterboxPlan


class DecodeStage:
    def __init__(self, family: str, settings: DecodeSettings) -> None:
        self._decode = get_decoder(family)
        self.settings = settings  # read once per frame; replaced whole by a reload

    def __call__(self, output: np.ndarray, plan: LetterboxPlan,
                 timings: dict[str, float]) -> Detections:
        t0 = time.perf_counter()
        dets = self._decode(output, plan, self.settings)
        timings["decode"] = (time.perf_counter() - t0) * 1000.0
        return dets
