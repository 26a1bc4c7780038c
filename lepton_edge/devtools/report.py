"""`lepton-edge report RUN.jsonl --out DIR`: plots of a recording, as PNG files.

Per camera: `latency.png` (each stage's latency per frame over the run, against seconds since
the camera's first frame, on a log scale so that a slow first frame or a stall does not flatten
the rest), `latency_hist.png` (their histograms, log-spaced bins) and `detections.png`
(detections per class per frame over the same time axis, the most frequent classes). With
several cameras the files are named `<camera>.latency.png` and so on.
matplotlib (the `report` extra) is imported only here, with the Agg backend: no display needed.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lepton_edge.devtools.recording import Recording
from lepton_edge.errors import BackendUnavailableError, MessageError
from lepton_edge.messages import DetectionMessage
from lepton_edge.pipeline.stats import STAGES

log = logging.getLogger(__name__)

TOP_CLASSES = 8
# Latencies below this (ms) are drawn at it: a log axis has no zero.
FLOOR_MS = 1e-3


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise BackendUnavailableError(
            "lepton-edge report plots with matplotlib, which is not installed; install it with: "
            "pip install 'lepton-edge[report]'") from err
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_report(recording: Recording, out: Path, *, dpi: int = 100) -> list[Path]:
    """Write the plots of every camera of `recording` into `out`; returns the files written."""
    if not recording.cameras:
        raise MessageError(f"{recording.path}: no detection messages to plot (only "
                           f"{len(recording.health)} health messages)")
    plt = _pyplot()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for camera, frames in recording.cameras.items():
        prefix = f"{camera}." if len(recording.cameras) > 1 else ""
        msgs = list(frames.values())
        span = seconds(msgs)[-1]
        title = (f"{camera}: {msgs[0].model} {msgs[0].precision}, {len(msgs)} frames in "
                 f"{span:.1f} s")
        for name, plot in (("latency", plot_latency), ("latency_hist", plot_latency_hist),
                           ("detections", plot_detections)):
            fig, ax = plt.subplots(figsize=(10, 4.5), dpi=dpi)
            try:
                plot(ax, msgs)
                ax.set_title(f"{title}: {ax.get_title()}")
                fig.tight_layout()
                path = out / f"{prefix}{name}.png"
                fig.savefig(path)
                written.append(path)
            finally:
                plt.close(fig)
    log.info("wrote %d plots to %s", len(written), out)
    return written


def _stages(msgs: list[DetectionMessage]) -> dict[str, np.ndarray]:
    """Each stage's latency per frame (NaN where a message lacks it), known stages first."""
    seen: list[str] = []
    for m in msgs:
        seen.extend(k for k in m.latency_ms if k not in seen)
    order = [s for s in STAGES if s in seen] + [s for s in seen if s not in STAGES]
    return {s: np.array([m.latency_ms.get(s, np.nan) for m in msgs], float) for s in order}


def _decorate(ax: Any, xlabel: str, ylabel: str, title: str) -> None:
    """Labels, title, grid and legend, alike on every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def seconds(msgs: list[DetectionMessage]) -> np.ndarray:
    """Each message's capture time in seconds since the first one's (the plots' time axis)."""
    ts = np.array([m.ts for m in msgs], float)
    return ts - ts[0]


def plot_latency(ax: Any, msgs: list[DetectionMessage]) -> None:
    """Each stage's latency over time, log y: the warm-up frame (often 10x the rest) and
    stalls stay visible without squashing the steady state into the bottom pixels."""
    x = seconds(msgs)
    for stage, ms in _stages(msgs).items():
        ax.plot(x, np.maximum(ms, FLOOR_MS), linewidth=0.8,
                label=f"{stage} (p50 {np.nanmedian(ms):.1f} ms)")
    ax.set_yscale("log")
    _decorate(ax, "time since the first frame (s)", "latency (ms, log scale)",
              "latency per stage")


def plot_latency_hist(ax: Any, msgs: list[DetectionMessage]) -> None:
    """Histograms of each stage's latency over log-spaced bins (stages span 0.01 ms .. 1 s)."""
    stages = _stages(msgs)
    finite = [v[np.isfinite(v)] for v in stages.values()]
    values = np.concatenate([*finite, [1.0]])
    low = max(float(np.min(np.maximum(values, FLOOR_MS))), FLOOR_MS)
    high = max(float(np.max(values)), low * 10)
    bins = np.geomspace(low, high * 1.05, 60)
    for (stage, _), ok in zip(stages.items(), finite, strict=True):
        ax.hist(np.clip(ok, bins[0], bins[-1]), bins=bins, histtype="step", linewidth=1.2,
                label=f"{stage} (p99 {np.percentile(ok, 99) if ok.size else 0:.1f} ms)")
    ax.set_xscale("log")
    _decorate(ax, "latency (ms, log scale)", "frames", "latency histogram")


def plot_detections(ax: Any, msgs: list[DetectionMessage]) -> None:
    """Detections per class per frame over time, the TOP_CLASSES most frequent, and all."""
    totals = Counter(d.label for m in msgs for d in m.detections)
    x = seconds(msgs)
    for label, n in totals.most_common(TOP_CLASSES):
        y = [sum(1 for d in m.detections if d.label == label) for m in msgs]
        ax.plot(x, y, linewidth=0.9, label=f"{label} ({n})")
    ax.plot(x, [len(m.detections) for m in msgs], color="black", linewidth=0.6, alpha=0.5,
            label=f"all ({sum(totals.values())})")
    _decorate(ax, "time since the first frame (s)", "detections", "detections per class")
