"""`lepton-edge bench`: the daemon's pipeline on a config's clips in bench mode, against bare
inference of the same model at the same input shape, measured in the same run.

Prints per-stage latency (capture, preprocess, infer, decode, publish: p50 and p99), end-to-end
fps, bare inference fps (`submit(...).wait()` in a loop on a prepared tensor) and their ratio.
Bare inference is measured in two halves, before and after the pipeline run, so drift on a
shared machine hits both sides alike. `--backend NAME[:PRECISION][,KEY=VALUE...]` (repeatable)
compares several backends, precisions or backend options on the same clip, e.g.
`openvino:int8,input=tensor`. `--json` puts one JSON object on the last line.

The config is resolved once per variant (`lepton_edge.run.resolve_run`), every variant before
the first run, so a bad option in the last `--backend` stops the bench before it starts; the
bare backend and the daemon take the same resolved run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2

from lepton_edge.backends import create_backend
from lepton_edge.config import Config, Override
from lepton_edge.errors import ConfigError, SourceError
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox
from lepton_edge.pipeline.sources import classify
from lepton_edge.pipeline.stats import format_latency
from lepton_edge.run import ResolvedRun, resolve_run
from lepton_edge.service.daemon import Daemon

log = logging.getLogger(__name__)


def bare_inference_fps(backend: Any, tensor: Any, seconds: float, min_runs: int = 5) -> float:
    """Frames per second of `backend` on one prepared tensor, keeping max_in_flight busy."""
    from collections import deque

    pending: deque[Any] = deque()
    warm_until = time.perf_counter() + min(1.0, seconds / 4)
    while time.perf_counter() < warm_until:  # first runs are slower (arena growth, caches)
        backend.submit(tensor).wait()
    runs = 0
    t0 = time.perf_counter()
    while runs < min_runs or time.perf_counter() - t0 < seconds:
        pending.append(backend.submit(tensor))
        if len(pending) >= backend.max_in_flight:
            pending.popleft().wait()
        runs += 1
    while pending:
        pending.popleft().wait()
    return runs / (time.perf_counter() - t0)


def _first_frame(url: str) -> Any:
    cap = cv2.VideoCapture(url)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SourceError(f"{url}: cannot read a frame to size the bare-inference tensor")
    return frame


def parse_spec(spec: str) -> tuple[str | None, str | None, dict[str, str]]:
    """`NAME[:PRECISION][,KEY=VALUE...]` -> (name, precision, backend options)."""
    head, *pairs = spec.split(",")
    name, _, precision = head.partition(":")
    options = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise ConfigError(f"--backend {spec}: expected NAME[:PRECISION][,KEY=VALUE...], "
                              f"got {pair!r}")
        options[key.strip()] = value.strip()
    return name or None, precision or None, options


def spec_overrides(spec: str) -> list[Override]:
    """`--backend SPEC` as config overrides, each validated like the file and named by the flag
    in errors (`--backend openvino:int8,hint=fast: backend_options.hint: ...`)."""
    name, precision, options = parse_spec(spec)
    origin = f"--backend {spec}"
    overrides = []
    if name:
        overrides.append(Override("backend", name, origin))
    if precision:
        overrides.append(Override("precision", precision, origin))
    if options:
        overrides.append(Override("backend_options", options, origin))
    return overrides


def bench_cameras(config: Config, frames: int) -> list[dict[str, Any]]:
    """The config's video files as bench cameras: every frame, in order, once."""
    cams = []
    for cam in config.cameras:
        if classify(config.camera_url(cam)) != "file":
            continue
        cams.append({**cam.model_dump(exclude_unset=True), "mode": "bench", "loop": False,
                     "max_frames": frames or cam.max_frames})
    if not cams:
        raise ConfigError(f"{config.source}: cameras: bench needs at least one video file")
    return cams


def resolve_bench(config_path: Path, spec: str, frames: int,
                  overrides: list[Override] | None = None,
                  previous: ResolvedRun | None = None) -> ResolvedRun:
    """The run one `--backend SPEC` benches: the config with the spec, its video files in bench
    mode, publishing on a free loopback port. `previous`: a variant whose artifact to reuse."""
    run = resolve_run(config_path, [*(overrides or []), *spec_overrides(spec)],
                      previous=previous)
    return run.with_overrides([
        Override("cameras", bench_cameras(run.config, frames), "bench"),
        Override("publish.endpoint", "tcp://127.0.0.1:0", "bench"),
    ])


def bench_one(run: ResolvedRun, bare_seconds: float) -> dict[str, Any]:
    """Bench one resolved run: bare inference, the daemon's pipeline, bare inference again."""
    config = run.config
    # Bare inference: the same backend type and encoding, the first clip's letterbox shape.
    artifact = run.artifact
    frame = _first_frame(config.camera_url(config.cameras[0]))
    bare = create_backend(run.backend, artifact, run.backend_options)
    bare.open()
    try:
        plan = plan_letterbox(frame.shape[1], frame.shape[0], config.input_size,
                              stride=artifact.input.stride)
        box = Letterbox(plan, bare.input.dtype, bare.input.layout)  # what the daemon feeds it
        tensor = box.new_buffer()
        box(frame, tensor[0])
        fps_before = bare_inference_fps(bare, tensor, bare_seconds / 2)
        daemon = Daemon(run)
        code = daemon.run()
        fps_after = bare_inference_fps(bare, tensor, bare_seconds / 2)
    finally:
        bare.close()
    summary = daemon.summary
    assert summary is not None and daemon.pipeline is not None and daemon.backend is not None
    stats = daemon.pipeline.stats
    elapsed = stats.active_seconds
    e2e = stats.published_frames / elapsed if elapsed > 0 else 0.0
    bare_fps = (fps_before + fps_after) / 2
    return {
        "backend": daemon.backend.name, "precision": daemon.backend.precision,
        "input": [plan.dst_h, plan.dst_w], "frames": stats.published_frames, "exit_code": code,
        "latency_ms": {k: {"p50": round(v["p50"], 2), "p99": round(v["p99"], 2)}
                       for k, v in summary.latency.items()},
        "e2e_fps": round(e2e, 2), "bare_fps": round(bare_fps, 2),
        "bare_fps_before": round(fps_before, 2), "bare_fps_after": round(fps_after, 2),
        "ratio": round(e2e / bare_fps, 3) if bare_fps else 0.0,
        "max_in_flight": daemon.backend.max_in_flight,
        "options": run.backend_options.extra,
    }


def format_result(r: dict[str, Any]) -> str:
    lines = [f"{_label(r)} at {r['input'][1]}x{r['input'][0]}, "
             f"{r['frames']} frames, {r['max_in_flight']} in flight"]
    lines += format_latency(r["latency_ms"])
    lines.append(f"  end-to-end {r['e2e_fps']:.1f} fps; bare inference {r['bare_fps']:.1f} fps "
                 f"(before {r['bare_fps_before']:.1f}, after {r['bare_fps_after']:.1f}); "
                 f"ratio {r['ratio']:.3f}")
    return "\n".join(lines)


def _label(r: dict[str, Any]) -> str:
    options = "".join(f",{k}={v}" for k, v in r.get("options", {}).items())
    return f"{r['backend']} {r['precision']}{options}"


def main_bench(args: argparse.Namespace) -> int:
    from lepton_edge.cli import log_level_overrides

    if not args.config:
        raise ConfigError("bench --config: required here (this installation has no "
                          "deploy/bench.yaml beside the package; it ships with the source "
                          "checkout), e.g. lepton-edge bench --config deploy/bench.yaml")
    flags = log_level_overrides(args)
    runs: list[ResolvedRun] = []
    for spec in args.backend or [""]:  # every variant resolved (so validated) before any run
        runs.append(resolve_bench(Path(args.config), spec, args.frames, flags,
                                  previous=runs[0] if runs else None))
    results = []
    for run in runs:
        r = bench_one(run, bare_seconds=args.bare_seconds)
        results.append(r)
        print(format_result(r), flush=True)
    if len(results) > 1:
        base = results[0]
        print(f"relative to {_label(base)} (same run):")
        for r in results[1:]:
            e2e = r["e2e_fps"] / base["e2e_fps"]
            bare = r["bare_fps"] / base["bare_fps"]
            print(f"  {_label(r)}: end-to-end {e2e:.2f}x, bare {bare:.2f}x")
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else {"results": results}))
    return max(r["exit_code"] for r in results)
