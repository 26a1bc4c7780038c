"""The daemon end to end against a plain serial loop, in one run.

The serial loop is what a first script does: read a frame, letterbox it to 640x640, run the
float model, decode with NMS, repeat. The daemon runs the same clip in bench mode (capture,
prepare, inference and publishing overlapped; minimal letterbox; the chosen precision).
The serial loop runs twice, before and after the daemon, and its fps is averaged, so drift on a
shared machine hits both sides alike.

    python bench/bench_pipeline.py [--frames 300] [--precision int8] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2

from lepton_edge.artifact import load_artifact
from lepton_edge.backends import create_backend
from lepton_edge.backends.base import BackendOptions
from lepton_edge.devtools.bench import bench_one
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8
from lepton_edge.pipeline.preprocess import letterbox

REPO = Path(__file__).resolve().parents[1]


def serial_loop(video: Path, frames: int, threads: int) -> float:
    """fps of read -> 640x640 letterbox -> float inference -> decode/NMS, one at a time."""
    art = load_artifact(REPO / "engines" / "yolov8n")
    with create_backend("onnxruntime", art, BackendOptions(precision="fp32",
                                                           threads=threads)) as backend:
        cap = cv2.VideoCapture(str(video))
        done = 0
        t0 = time.perf_counter()
        while done < frames:
            ok, frame = cap.read()
            if not ok:
                break
            tensor, plan = letterbox(frame, fixed=(640, 640))
            out = backend.submit(tensor).wait()[0][0]
            decode_yolov8(out, plan, DecodeSettings())
            done += 1
        elapsed = time.perf_counter() - t0
        cap.release()
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "deploy" / "bench.yaml"))
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    video = REPO / "samples" / "vtest.avi"
    before = serial_loop(video, args.frames // 2, args.threads)
    r = bench_one(Path(args.config), args.backend, args.precision, args.frames, bare_seconds=6)
    after = serial_loop(video, args.frames // 2, args.threads)
    serial = (before + after) / 2
    print(f"serial loop (read, 640x640 letterbox, float, NMS): {serial:.1f} fps "
          f"(before {before:.1f}, after {after:.1f})")
    print(f"daemon {r['backend']} {r['precision']} at {r['input'][1]}x{r['input'][0]}: "
          f"{r['e2e_fps']:.1f} fps end to end ({r['frames']} frames); "
          f"bare inference {r['bare_fps']:.1f} fps")
    print(f"daemon / serial loop: {r['e2e_fps'] / serial:.2f}x; "
          f"daemon / bare inference: {r['ratio']:.3f}")
    print(json.dumps({"serial_fps": round(serial, 2), **r,
                      "speedup_vs_serial": round(r["e2e_fps"] / serial, 3)}))


if __name__ == "__main__":
    main()
