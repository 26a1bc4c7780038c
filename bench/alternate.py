"""Daemon runs of variants, alternated, for the benches that compare a feature on and off: the
bundled bench config resolved once per run with each variant's overrides, run in this process
as `lepton-edge run` would, fps = the daemon's published frames over its active seconds.

Variants take turns (A B, B A, A B, ...) after one warm-up run that is not counted, so drift on
a shared machine hits both sides alike; the ratio is the median over the medians, with the
per-round ratios beside it. The process's CPU time per frame (inference threads included) is
printed too: on a loaded machine wall-clock fps swings between runs, CPU per frame does not.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lepton_edge.run import RunOptions, resolve_run
from lepton_edge.service.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "deploy" / "bench.yaml"


def daemon_run(overrides: Mapping[str, Any], config: Path = CONFIG,
               during: Callable[[], Callable[[], dict[str, Any]]] | None = None
               ) -> dict[str, Any]:
    """One daemon run; `during()` is called just before it starts and returns what to call
    after it ends (clients to stop), whose dict is merged into the result."""
    run = resolve_run(config, dict(overrides), options=RunOptions())
    daemon = Daemon(run)
    finish = during() if during is not None else None
    cpu0 = _cpu()
    daemon.run()
    cpu = _cpu() - cpu0
    extra = finish() if finish is not None else {}
    stats = daemon.pipeline.stats
    return {"fps": stats.published_frames / stats.active_seconds,
            "frames": stats.published_frames,
            "cpu_ms_per_frame": round(cpu * 1000 / max(1, stats.published_frames), 2), **extra}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def alternate(names: tuple[str, str], rounds: int,
              run: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """`run(name)` for both names, `rounds` times each, alternating which goes first; prints
    each run and the ratio of the second name over the first."""
    run(names[0])  # warm-up
    fps: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            got = run(name)
            fps[name].append(got["fps"])
            cpu[name].append(got["cpu_ms_per_frame"])
            detail = ", ".join(f"{k} {v}" for k, v in got.items() if k != "fps")
            print(f"round {r + 1} {name:>10}: {got['fps']:.1f} fps ({detail})", flush=True)
    a, b = (statistics.median(fps[n]) for n in names)
    pairs = [y / x for x, y in zip(fps[names[0]], fps[names[1]], strict=True)]
    ca, cb = (statistics.median(cpu[n]) for n in names)
    print(f"{names[0]} {a:.1f} fps, {names[1]} {b:.1f} fps: ratio {b / a:.3f} (per round "
          f"{', '.join(f'{p:.3f}' for p in pairs)}); CPU of this process per frame "
          f"{ca:.2f} / {cb:.2f} ms: {names[1]} costs {cb - ca:+.2f} ms ({cb / ca:.3f}x), "
          f"the figure that does not move with the machine's load")
    return {"fps": fps, "ratio": b / a, "pairs": pairs, "cpu_ms_per_frame": cpu}
