"""INT8 vs float on ONNX Runtime CPU, same run, same input, interleaved.

    .venv/bin/python bench/bench_int8.py [ARTIFACT] [--rounds 5] [--iters 20] [--threads 0]

Letterboxes one vtest.avi frame (768x576 -> 640x512) with the daemon's preprocessing and times
fp32, int8-cpu and int8-device through the daemon's ONNX Runtime backend, in rounds that
alternate the models (so load on a shared machine hits them alike). Prints the median ms/frame
of each and the speedup over fp32.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lepton_edge.artifact import load_artifact  # noqa: E402
from lepton_edge.backends import BackendOptions, create_backend  # noqa: E402
from lepton_edge.pipeline.preprocess import letterbox  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", nargs="?", default=str(ROOT / "engines" / "yolov8n"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    args = parser.parse_args()

    cap = cv2.VideoCapture(str(ROOT / "samples" / "vtest.avi"))
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit("cannot read samples/vtest.avi")
    tensor, plan = letterbox(frame, 640)
    art = load_artifact(args.artifact)
    backends = {}
    for enc in ("fp32", "int8-cpu", "int8-device"):
        if enc not in art.models:
            continue
        # An artifact view with only this encoding, so the backend picks exactly it.
        view = dataclasses.replace(art, models={enc: art.models[enc]})
        precision = "fp32" if enc == "fp32" else "int8"
        backend = create_backend("onnxruntime", view,
                                 BackendOptions(precision=precision, threads=args.threads))
        backend.open()
        for _ in range(3):  # warm up
            backend.submit(tensor).wait()
        backends[enc] = backend
    times: dict[str, list[float]] = {enc: [] for enc in backends}
    for _ in range(args.rounds):
        for enc, backend in backends.items():
            t0 = time.perf_counter()
            for _ in range(args.iters):
                backend.submit(tensor).wait()
            times[enc].append(1000 * (time.perf_counter() - t0) / args.iters)
    base = statistics.median(times["fp32"])
    print(f"input {plan.dst_w}x{plan.dst_h} (from {plan.src_w}x{plan.src_h}), "
          f"{args.rounds} rounds x {args.iters} runs, interleaved")
    for enc, t in times.items():
        med = statistics.median(t)
        print(f"  {enc:12s} {med:7.2f} ms/frame  (min {min(t):.2f})  x{base / med:.2f} vs fp32")
    for backend in backends.values():
        backend.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
