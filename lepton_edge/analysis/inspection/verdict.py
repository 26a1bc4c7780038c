"""`Verdict`: the one answer an inspection station gives each trigger (an `Outcome`).

A verdict is `pass`, `fail` (a rule failed, or the deadline passed: reason `timeout`) or
`error` (no judgement was possible: camera lost, backend error, overrun, restart, stopping).
Its payload is schema v1 on topic `verdict.<camera>`; `result_code` is what the PLC reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lepton_edge.detections import Detections

VerdictKind = Literal["pass", "fail", "error"]

# The result-code register (README, "Modbus register map"). 0 = nothing written yet.
RESULT_CODES: dict[str, int] = {
    "pass": 1,          # every rule held
    "count": 2,         # a count rule failed (min/max/exact)
    "forbidden": 3,     # a forbidden (defect) class was found
    "timeout": 4,       # no judgement inside the deadline (fail-safe: reject)
    "camera_lost": 10,  # the camera was down: error
    "backend": 11,      # inference or judging failed: error
    "overrun": 12,      # triggers came faster than the station inspects: error
    "restart": 13,      # the daemon stopped before answering (recorded on restart): error
    "stopping": 14,     # the station closed with the trigger pending: error
    "config": 15,       # a rule names a class the model does not know: error
}


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a verdict is not `pass`: which rule of which ROI, expected vs found."""

    code: str
    roi: str | None = None
    rule: str | None = None
    expected: str | None = None
    found: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "roi": self.roi, "rule": self.rule,
                "expected": self.expected, "found": self.found}


@dataclass(frozen=True)
class Verdict:
    """One trigger's answer. `rois` maps each ROI id to the detections counted in it (wire
    dicts: label, class_id, score, box). `image` (the inspected BGR frame, or None) and
    `detections` (all of the frame's boxes) travel to the evidence writer only, never on the
    wire."""

    camera: str
    trigger_id: int
    verdict: VerdictKind
    reasons: tuple[Reason, ...]
    rois: dict[str, list[dict[str, Any]]]
    latency_ms: float
    part_count: int
    ts_trigger: float
    ts: float
    frame: int | None = None
    evidence: str | None = None
    source: str = "software"
    image: np.ndarray | None = field(default=None, repr=False, compare=False)
    detections: Detections | None = field(default=None, repr=False, compare=False)
    labels: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def topic(self) -> str:
        return f"verdict.{self.camera}"

    @property
    def result_code(self) -> int:
        if self.verdict == "pass":
            return RESULT_CODES["pass"]
        code = self.reasons[0].code if self.reasons else "backend"
        return RESULT_CODES.get(code, RESULT_CODES["backend"])

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "camera": self.camera, "trigger_id": self.trigger_id,
                "verdict": self.verdict, "reasons": [r.to_dict() for r in self.reasons],
                "rois": self.rois, "latency_ms": round(self.latency_ms, 3),
                "part_count": self.part_count, "ts_trigger": self.ts_trigger, "ts": self.ts,
                "frame": self.frame, "evidence": self.evidence,
                "result_code": self.result_code, "source": self.source}

    def to_payload(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()


def error_reason(code: str, found: Any = None, expected: str | None = None) -> Reason:
    """A reason for a verdict that was not judged (timeout, camera_lost, overrun, ...)."""
    return Reason(code=code, rule=code, expected=expected, found=found)
