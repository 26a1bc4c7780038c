"""ONNX Runtime against OpenVINO on this machine, in one interleaved run.

    python bench/bench_backends.py [--artifact engines/yolov8n] [--frames 200] [--rounds 3]

On frames of samples/vtest.avi (768x576, letterboxed to 640x512) it measures, for ORT float,
ORT INT8 (`int8-cpu`), OpenVINO fp32 (f32 hint), bf16 and INT8 (`int8-openvino`):
- latency: synchronous inference of one prepared frame, median ms (inference only);
- end to end: decode the video, letterbox, infer with the backend's `max_in_flight` requests in
  flight, decode and NMS the detections, frames per second.
Rounds alternate between the configurations so that load from other processes hits each the
same. An encoding missing from the artifact is reported and skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lepton_edge.artifact import load_artifact  # noqa: E402
from lepton_edge.backends import backend_class  # noqa: E402
from lepton_edge.backends.base import BackendOptions  # noqa: E402
from lepton_edge.errors import LeptonError  # noqa: E402
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8  # noqa: E402
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox  # noqa: E402

CONFIGS = [  # (label, backend, precision)
    ("ort float", "onnxruntime", "fp32"),
    ("ort int8", "onnxruntime", "int8"),
    ("ov fp32", "openvino", "fp32"),
    ("ov bf16", "openvino", "bf16"),
    ("ov int8", "openvino", "int8"),
]


@dataclass
class Result:
    label: str
    backend: object
    in_flight: int = 1
    latency_ms: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    batch: np.ndarray | None = None  # the first frame in the backend's own input layout


def read_frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def latency(res: Result, batch: np.ndarray, n: int) -> None:
    for _ in range(n):
        t = time.perf_counter()
        res.backend.submit(batch).wait()
        res.latency_ms.append((time.perf_counter() - t) * 1000)


def end_to_end(res: Result, video: Path, n: int) -> None:
    """Capture, letterbox into a ring of buffers, keep `in_flight` batches running, decode."""
    cap = cv2.VideoCapture(str(video))
    box: Letterbox | None = None
    ring: list[np.ndarray] = []
    pending: deque = deque()
    settings = DecodeSettings(score=0.35, iou=0.5)
    done = 0
    t = time.perf_counter()
    for i in range(n):
        ok, frame = cap.read()
        if not ok:
            break
        if box is None:
            spec = res.backend.input  # the layout the daemon feeds this backend
            box = Letterbox(plan_letterbox(frame.shape[1], frame.shape[0], 640), spec.dtype,
                            spec.layout)
            ring = [box.new_buffer() for _ in range(res.in_flight + 1)]
        buf = ring[i % len(ring)]
        box(frame, buf[0])
        if len(pending) == res.in_flight:
            decode_yolov8(pending.popleft().wait()[0][0], box.plan, settings)
            done += 1
        pending.append(res.backend.submit(buf))
    while pending:
        decode_yolov8(pending.popleft().wait()[0][0], box.plan, settings)
        done += 1
    res.fps.append(done / (time.perf_counter() - t))
    cap.release()


def _batch(frame: np.ndarray, backend) -> np.ndarray:
    """`frame` letterboxed in the dtype and layout `backend` takes."""
    spec = backend.input
    box = Letterbox(plan_letterbox(frame.shape[1], frame.shape[0], 640), spec.dtype, spec.layout)
    batch = box.new_buffer()
    box(frame, batch[0])
    return batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--artifact", default=str(REPO / "engines" / "yolov8n"))
    ap.add_argument("--video", default=str(REPO / "samples" / "vtest.avi"))
    ap.add_argument("--frames", type=int, default=200, help="frames per end-to-end round")
    ap.add_argument("--latency-runs", type=int, default=30, help="sync runs per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="0: each runtime's default")
    args = ap.parse_args(argv)

    art = load_artifact(args.artifact)
    video = Path(args.video)
    frame = read_frames(video, 1)[0]
    box = Letterbox(plan_letterbox(frame.shape[1], frame.shape[0], 640))
    print(f"{art.root}: encodings {', '.join(sorted(art.models))}; {video.name} "
          f"{frame.shape[1]}x{frame.shape[0]} -> {box.plan.dst_w}x{box.plan.dst_h}")

    results: list[Result] = []
    for label, name, precision in CONFIGS:
        try:
            backend = backend_class(name)(art, BackendOptions(precision=precision,
                                                              threads=args.threads))
            backend.open()
            batch = _batch(frame, backend)
            backend.submit(batch).wait()  # compile/warm up outside the measurement
            res = Result(label, backend, backend.max_in_flight)
            res.batch = batch
            latency(res, batch, 3)
            res.latency_ms.clear()
        except LeptonError as err:
            print(f"  {label:9s} skipped: {err}")
            continue
        print(f"  {label:9s} {getattr(backend, 'encoding', '?')}, {res.in_flight} in flight")
        results.append(res)

    for r in range(args.rounds):
        for res in results:
            latency(res, res.batch, args.latency_runs)
            end_to_end(res, video, args.frames)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{res.label} {res.fps[-1]:.1f} fps" for res in results), flush=True)

    print(f"\n{'config':10s} {'in flight':>9s} {'latency ms':>11s} {'e2e fps':>8s}")
    for res in results:
        print(f"{res.label:10s} {res.in_flight:9d} {statistics.median(res.latency_ms):11.1f} "
              f"{statistics.median(res.fps):8.1f}")
    by = {res.label: res for res in results}
    base = by.get("ort int8") or by.get("ort float")
    if base is not None:
        print(f"\nratios against {base.label} (latency: its ms / ours; e2e: ours / its fps)")
        for res in results:
            if res is base:
                continue
            lat = statistics.median(base.latency_ms) / statistics.median(res.latency_ms)
            fps = statistics.median(res.fps) / statistics.median(base.fps)
            print(f"  {res.label:10s} latency x{lat:.2f}  e2e x{fps:.2f}")
    if "ort int8" not in by:
        print("\nno ORT INT8 model in the artifact (int8-cpu): compile one to compare")
    for res in results:
        res.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
