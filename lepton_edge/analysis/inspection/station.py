"""An inspection station: one camera's triggered inspection, as a `CameraAnalyser`.

Each trigger (triggers.py) gets the next `trigger_id`, its time, a row in the durable verdict
log, and a deadline. `admit` picks the first frame captured at or after the trigger (plus
`delay_ms`) for it and lets no other frame through; `analyse` judges that frame against the ROI
rules (rules.py). Whatever happens, each trigger gets exactly one verdict:

- rules hold / a rule failed: `pass` / `fail` (reasons: which rule, expected, found);
- no judgement inside `deadline_ms`: `fail`, reason `timeout` (fail-safe: reject the part);
- the camera is down (on_state), or inference failed (on_error): `error` (camera_lost, backend);
- more than `max_pending` triggers waiting: the new one is answered `error`, reason `overrun`;
- the station closes with triggers pending: `error`, reason `stopping`; a process that died
  with triggers pending answers them on the next start: `error`, reason `restart`.

A verdict is committed to the log first, then handed to the evidence writer, the PLC output and
`emit` (the pipeline's sinks). The deadline timer and the trigger threads decide verdicts too,
so every decision goes through one lock that lets only the first answer of a trigger out.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton_edge.analysis.inspection.rules import Roi, judge, unknown_labels
from lepton_edge.analysis.inspection.triggers import Trigger, TriggerConfig, build_trigger
from lepton_edge.analysis.inspection.verdict import Reason, Verdict, VerdictKind, error_reason
from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError
from lepton_edge.results import Emit, FrameResult
from lepton_edge.sinks.evidence import EvidenceConfig, EvidenceWriter, evidence_name
from lepton_edge.sinks.plc import PlcOutput, PlcOutputConfig
from lepton_edge.sinks.verdict_log import VerdictLog, VerdictLogConfig

log = logging.getLogger(__name__)

LOST_STATES = frozenset({"retrying", "failed", "finished", "stopped"})
COUNTERS = ("triggers", "pass", "fail", "error", "timeout", "overrun", "camera_lost",
            "backend", "restart", "stopping", "log_failures")


class InspectConfig(BaseModel):
    """`inspect:` of a camera: its triggers, when to look, how long it may take, and what a
    good part looks like."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    triggers: Annotated[tuple[TriggerConfig, ...], Field(min_length=1)]
    delay_ms: Annotated[float, Field(ge=0, le=10000)] = 0.0
    deadline_ms: Annotated[float, Field(gt=0, le=60000)] = 150.0
    max_pending: Annotated[int, Field(ge=1, le=64)] = 2
    rois: Annotated[tuple[Roi, ...], Field(min_length=1)]
    # Feed the model only the ROIs' bounding box (at full resolution: small parts on a wide
    # view). The pipeline's prepare stage letterboxes `Station.crop_box`; boxes map back.
    crop: bool = False
    evidence: EvidenceConfig = EvidenceConfig()
    log: VerdictLogConfig = VerdictLogConfig()
    plc: PlcOutputConfig | None = None

    @field_validator("rois")
    @classmethod
    def _unique_rois(cls, rois: tuple[Roi, ...]) -> tuple[Roi, ...]:
        seen: set[str] = set()
        for i, roi in enumerate(rois):
            if roi.id in seen:
                raise ValueError(f"rois[{i}].id {roi.id!r} is used twice")
            seen.add(roi.id)
        return rois

    @model_validator(mode="after")
    def _crop_needs_shapes(self) -> InspectConfig:
        whole = [r.id for r in self.rois if r.rect is None and r.polygon is None]
        if self.crop and whole:
            raise ValueError(f"crop: true needs a rect or polygon on every ROI; "
                             f"{', '.join(whole)} cover the whole frame")
        return self

    @model_validator(mode="after")
    def _deadline_after_delay(self) -> InspectConfig:
        if self.deadline_ms <= self.delay_ms:
            raise ValueError(f"deadline_ms ({self.deadline_ms:g}) must be longer than "
                             f"delay_ms ({self.delay_ms:g}): no frame could ever be judged")
        return self


@dataclass
class _Pending:
    trigger_id: int
    source: str
    ts: float  # epoch seconds at the trigger
    t: float  # monotonic seconds at the trigger
    due: float  # the first frame captured at or after this is the one inspected
    deadline: float
    frame: int | None = None
    image: np.ndarray | None = None


class Station:
    """The `CameraAnalyser` of an inspection camera. Build it with `build_station`."""

    def __init__(self, camera: str, cfg: InspectConfig, emit: Emit, *, verdict_log: VerdictLog,
                 evidence: EvidenceWriter | None = None, plc: PlcOutput | None = None,
                 labels: Sequence[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.camera = camera
        self.cfg = cfg
        self.emit = emit
        self.log = verdict_log
        self.evidence = evidence
        self.plc = plc
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._last_id = 0
        self._parts = 0
        self._camera_up = True
        self._closed = False
        self._bad_labels: list[str] | None = None
        if labels is not None:
            self._check_labels(labels)
        self._triggers: list[Trigger] = []
        self._watcher: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> Station:
        """Answer what a previous run left unanswered, then open the outputs and triggers."""
        self._last_id = self.log.last_trigger_id(self.camera)
        self._parts = self.log.part_count(self.camera)
        self._recover()
        for sink in (self.evidence, self.plc):
            if sink is not None:
                sink.open()
        self._watcher = threading.Thread(target=self._watch, daemon=True,
                                         name=f"deadline-{self.camera}")
        self._watcher.start()
        try:
            for tcfg in self.cfg.triggers:
                trigger = build_trigger(tcfg, self.camera, self.fire)
                trigger.start()
                self._triggers.append(trigger)
        except Exception:
            self.close("stopping")
            raise
        return self

    def close(self, reason: str = "stopping") -> None:
        """Stop the triggers, answer what is pending (`error: stopping`), flush the outputs."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        for trigger in self._triggers:
            trigger.stop()
        with self._cond:
            left, self._pending = self._pending, []
            self._cond.notify_all()
        for p in left:
            self._publish(p, "error", (error_reason("stopping", reason),))
        if self._watcher is not None:
            self._watcher.join(5)
        for sink in (self.evidence, self.plc):
            if sink is not None:
                sink.close()
        self.log.close()

    # ---------------------------------------------------------------- triggers

    def fire(self, source: str = "software", t: float | None = None,
             ts: float | None = None) -> int:
        """A trigger (any thread) seen at monotonic `t` and epoch `ts` (default: now): its id,
        once the log holds it."""
        t = self.clock() if t is None else t
        ts = time.time() if ts is None else ts
        immediate: tuple[Reason, ...] | None = None
        with self._cond:
            if self._closed:
                log.warning("%s: trigger after close ignored", self.camera)
                return 0
            self._last_id += 1
            self._counts["triggers"] += 1
            p = _Pending(self._last_id, source, ts, t, t + self.cfg.delay_ms / 1000,
                         t + self.cfg.deadline_ms / 1000)
            waiting = len(self._pending)
            if not self._camera_up:
                immediate = (error_reason("camera_lost", "camera down at the trigger"),)
            elif waiting >= self.cfg.max_pending:
                immediate = (error_reason("overrun", waiting,
                                          f"<= {self.cfg.max_pending} waiting"),)
            else:
                self._pending.append(p)
                self._cond.notify_all()
        self._log_trigger(p)
        if immediate is not None:
            self._publish(p, "error", immediate)
        return p.trigger_id

    def _log_trigger(self, p: _Pending) -> None:
        try:
            self.log.record_trigger(self.camera, p.trigger_id, p.source, p.ts)
        except Exception:
            with self._cond:
                self._counts["log_failures"] += 1
            log.exception("%s: the verdict log cannot record trigger %d", self.camera,
                          p.trigger_id)

    # ---------------------------------------------------------------- CameraAnalyser

    def prefilter(self, t_capture: float) -> bool:
        """The capture thread's check before it retrieves a frame's pixels: only a frame some
        waiting trigger is due for (between parts, no frame is converted or handed over)."""
        with self._cond:
            return self._camera_up and any(p.frame is None and t_capture >= p.due
                                           for p in self._pending)

    def admit(self, image: np.ndarray, index: int, t_capture: float) -> bool:
        """True for the first frame captured at or after the oldest waiting trigger."""
        with self._cond:
            if not self._camera_up:
                return False
            for p in self._pending:
                if p.frame is None:
                    if t_capture < p.due:
                        return False
                    p.frame, p.image = index, image.copy()
                    return True
        return False

    def analyse(self, result: FrameResult) -> Detections:
        with self._cond:
            p = next((q for q in self._pending if q.frame == result.frame), None)
        if p is None:
            return result.detections
        if self._bad_labels is None:
            self._check_labels(result.labels)
        try:
            if self._bad_labels:
                kind: VerdictKind = "error"
                reasons: tuple[Reason, ...] = (error_reason(
                    "config", ", ".join(self._bad_labels), "classes the model detects"),)
                found: dict[str, list[dict[str, Any]]] = {}
            else:
                failed, found = judge(self.cfg.rois, result.detections, result.labels,
                                      result.width, result.height)
                kind, reasons = ("fail", tuple(failed)) if failed else ("pass", ())
        except Exception as err:
            log.exception("%s: judging trigger %d failed", self.camera, p.trigger_id)
            kind, reasons, found = "error", (error_reason("backend", str(err)),), {}
        if self._take(p):
            self._publish(p, kind, reasons, found, result)
        return result.detections

    def on_state(self, state: str, ts: float) -> None:
        if state == "connected":
            with self._cond:
                self._camera_up = True
            return
        if state not in LOST_STATES:
            return
        with self._cond:
            self._camera_up = False
            left, self._pending = self._pending, []
        for p in left:
            self._publish(p, "error", (error_reason("camera_lost", f"camera {state}"),))

    def on_error(self, index: int | None, message: str) -> None:
        """Inference of frame `index` failed (None: the backend is gone): its trigger (or every
        waiting one) is answered `error: backend`."""
        with self._cond:
            hit = [p for p in self._pending if index is None or p.frame == index]
            self._pending = [p for p in self._pending if p not in hit]
        for p in hit:
            self._publish(p, "error", (error_reason("backend", message),))

    # ---------------------------------------------------------------- deciding

    def _take(self, p: _Pending) -> bool:
        """Remove `p` from the waiting list; False when someone else answered it already."""
        with self._cond:
            if p in self._pending:
                self._pending.remove(p)
                return True
            return False

    def _watch(self) -> None:
        timeout_reason = f"<= {self.cfg.deadline_ms:g} ms"
        while True:
            with self._cond:
                if self._closed:
                    return
                now = self.clock()
                expired = [p for p in self._pending if p.deadline <= now]
                if not expired:
                    nxt = min((p.deadline for p in self._pending), default=now + 1.0)
                    self._cond.wait(max(0.0005, nxt - now))
                    continue
                self._pending = [p for p in self._pending if p not in expired]
            for p in expired:
                found = "no frame yet" if p.frame is None else f"frame {p.frame} not judged"
                self._publish(p, "fail", (Reason("timeout", None, "deadline", timeout_reason,
                                                 found),), image=p.image)

    def _publish(self, p: _Pending, kind: VerdictKind, reasons: tuple[Reason, ...],
                 rois: dict[str, list[dict[str, Any]]] | None = None,
                 result: FrameResult | None = None, image: np.ndarray | None = None) -> None:
        now = self.clock()
        with self._cond:
            self._parts += 1
            parts = self._parts
            self._counts[kind] += 1
            code = reasons[0].code if reasons else ""
            if code in self._counts and code not in ("pass", "fail", "error"):
                self._counts[code] += 1
            sample = self.cfg.evidence.sample_passes
            keep = kind != "pass" or (sample > 0 and self._counts["pass"] % sample == 0)
        image = p.image if image is None else image  # copied at admit: the pipeline may reuse
        name = None
        if self.evidence is not None and keep:
            name = evidence_name(self.camera, p.trigger_id, kind)
        v = Verdict(camera=self.camera, trigger_id=p.trigger_id, verdict=kind, reasons=reasons,
                    rois=rois or {}, latency_ms=(now - p.t) * 1000, part_count=parts,
                    ts_trigger=p.ts, ts=time.time(),
                    frame=result.frame if result is not None else p.frame, evidence=name,
                    source=p.source, image=image,
                    detections=result.detections if result is not None else None,
                    labels=tuple(result.labels) if result is not None else ())
        self._deliver(v)

    def _deliver(self, v: Verdict, *, to_plc: bool = True) -> None:
        try:
            self.log.record_verdict(v.to_dict())
        except Exception:
            with self._cond:
                self._counts["log_failures"] += 1
            log.exception("%s: the verdict log cannot record the verdict of trigger %d",
                          self.camera, v.trigger_id)
        if self.evidence is not None and v.evidence is not None:
            self.evidence.outcome(v)
        # Queues downstream may hold thousands of verdicts while a broker is down: without
        # the frame (it went to the evidence writer) a verdict is a few hundred bytes.
        v = replace(v, image=None, detections=None)
        if self.plc is not None and to_plc:
            self.plc.outcome(v)
        try:
            self.emit(v)
        except Exception:
            log.exception("%s: emitting the verdict of trigger %d failed", self.camera,
                          v.trigger_id)

    def _recover(self) -> None:
        """Triggers the last run logged but never answered: `error: restart` (not to the PLC:
        those parts are long past it)."""
        for row in self.log.unanswered(self.camera):
            self._parts += 1
            self._counts["error"] += 1
            self._counts["restart"] += 1
            v = Verdict(camera=self.camera, trigger_id=row["trigger_id"], verdict="error",
                        reasons=(error_reason("restart", "no verdict before the process "
                                                         "stopped"),),
                        rois={}, latency_ms=(time.time() - row["ts_trigger"]) * 1000,
                        part_count=self._parts, ts_trigger=row["ts_trigger"], ts=time.time(),
                        source=row["source"] or "unknown")
            self._deliver(v, to_plc=False)
        if self._counts["restart"]:
            log.warning("%s: %d triggers of the last run had no verdict: recorded as "
                        "error: restart", self.camera, self._counts["restart"])

    def _check_labels(self, labels: Sequence[str]) -> None:
        self._bad_labels = unknown_labels(self.cfg.rois, labels)
        if self._bad_labels:
            log.error("%s: inspect.rois name classes the model does not detect: %s; every "
                      "verdict is error: config until the config is fixed", self.camera,
                      ", ".join(self._bad_labels))

    # ---------------------------------------------------------------- health

    @property
    def counters(self) -> dict[str, int]:
        """pass, fail, error, timeout, overrun, ... since start (for health and metrics)."""
        with self._cond:
            out = dict(self._counts)
            out["pending"] = len(self._pending)
        return out

    @functools.cached_property
    def crop_box(self) -> tuple[int, int, int, int] | None:
        """With `crop: true`, the region to infer (x1, y1, x2, y2 source pixels, the ROIs'
        bounding box): the prepare stage letterboxes only it, and the detections handed to
        `analyse` are in whole-frame pixels."""
        if not self.cfg.crop:
            return None
        pts = np.concatenate([r.outline(0, 0) for r in self.cfg.rois])
        x1, y1 = np.floor(pts.min(axis=0)).astype(int).tolist()
        x2, y2 = np.ceil(pts.max(axis=0)).astype(int).tolist()
        return max(0, x1), max(0, y1), x2, y2

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending)


def build_station(camera_id: str, inspect_cfg: InspectConfig, emit: Emit, state_dir: Path, *,
                  labels: Sequence[str] | None = None) -> Station:
    """The started station of camera `camera_id`: its verdict log (state_dir/verdicts.sqlite),
    its evidence folder (state_dir/evidence/<camera>), its PLC output and triggers. `labels`
    (the model's classes), when given, are checked against the rules now (ConfigError)."""
    state_dir = Path(state_dir)
    if labels is not None:
        bad = unknown_labels(inspect_cfg.rois, labels)
        if bad:
            raise ConfigError(f"cameras[{camera_id}].inspect.rois: the model does not detect "
                              f"{', '.join(bad)}; use its class names (e.g. "
                              f"{', '.join(list(labels)[:5])})")
    vlog = VerdictLog(state_dir / inspect_cfg.log.path, inspect_cfg.log).open()
    evidence = None
    if inspect_cfg.evidence.enabled:
        evidence = EvidenceWriter(state_dir / inspect_cfg.evidence.path / camera_id,
                                  inspect_cfg.evidence, inspect_cfg.rois)
    plc = PlcOutput(inspect_cfg.plc, camera_id) if inspect_cfg.plc is not None else None
    station = Station(camera_id, inspect_cfg, emit, verdict_log=vlog, evidence=evidence,
                      plc=plc, labels=labels)
    try:
        return station.start()
    except Exception:
        vlog.close()
        raise
