"""The typed values that flow from the pipeline's later stages to the sinks.

`FrameResult` is one inferred, decoded frame of one camera. `Outcome` is something the analysis
stage decided (an event of a tracked object, an inspection verdict): unlike a frame it must be
delivered or logged, never dropped. `CameraAnalyser` is the analysing stage's per-camera
protocol: stateful, it sees typed detections and the frame's time, never the wire format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from lepton_edge.detections import Detections


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One inferred frame of one camera, after NMS and analysis.

    image: the captured HxWx3 uint8 BGR frame (shared, read-only: copy before drawing on it).
    ts: capture time, epoch seconds; t_capture: time.monotonic() at capture.
    seq: this camera's message counter (no gaps); frame: the source's frame number.
    latency_ms: per-stage latencies so far (capture, preprocess, infer, decode, ...).
    """

    camera: str
    seq: int
    frame: int
    ts: float
    t_capture: float
    image: np.ndarray
    detections: Detections
    labels: tuple[str, ...]
    latency_ms: Mapping[str, float]

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


@runtime_checkable
class Outcome(Protocol):
    """An event or a verdict: what the sinks must deliver (or log), never drop."""

    @property
    def camera(self) -> str: ...

    @property
    def topic(self) -> str:  # "event.<camera>", "verdict.<camera>"
        ...

    def to_payload(self) -> bytes:  # UTF-8 JSON, schema v1
        ...


Emit = Callable[[Outcome], None]


class CameraAnalyser(Protocol):
    """The analysing stage of one camera (tracking, zones and events, or an inspection station).

    `admit` runs on every captured frame before the letterbox and says whether to infer it
    (detect rate, motion gate, triggers): it must be cheap. `analyse` runs after NMS in the
    decoding thread and returns the detections to publish (with `track_id` where it tracks);
    outcomes it decides, then or later (a deadline), go to the `emit` it was built with.
    `on_state` hears the camera's state changes (a lost camera fails pending inspections).
    `close` ends what is open (events get their `end`) when the camera is removed or the daemon
    stops; it is safe to call twice.

    Two optional members, read with getattr: `prefilter`, a time-only check (t_capture ->
    bool) the capture thread asks before it retrieves a frame's pixels (a detect rate: the
    frames it refuses never reach `admit`), and `crop_box`, a region (x1, y1, x2, y2) the
    prepare stage letterboxes instead of the whole frame (an inspection station's ROIs).
    """

    def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool: ...

    def analyse(self, result: FrameResult) -> Detections: ...

    def on_state(self, state: str, ts: float) -> None: ...

    def close(self, reason: str) -> None: ...
