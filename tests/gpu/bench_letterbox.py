"""Microbenchmark, one run: the CUDA letterbox kernel vs the CPU letterbox on 768x576 frames
of samples/vtest.avi (-> 640x512 float32), same frames, same process.

Prints per-frame milliseconds: kernel alone (CUDA events), upload + kernel + copy back
(pinned path, what a discrete GPU pays per frame), and the CPU `Letterbox`; and the ratio."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lepton_edge.backends.tensorrt.cuda.buffers import DeviceLetterbox, Gpu  # noqa: E402
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox  # noqa: E402

FRAMES = 200
REPEATS = 5


def main() -> None:
    cap = cv2.VideoCapture(str(ROOT / "samples" / "vtest.avi"))
    frames = [cap.read()[1] for _ in range(FRAMES)]
    cap.release()
    h, w = frames[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    gpu = Gpu.start()
    box = DeviceLetterbox(gpu, plan, np.float32, mode="pinned")
    drv = gpu.drv
    with gpu.active():
        start, end = drv.Event(), drv.Event()
        for f in frames[:10]:  # warm-up: compile, first launches
            box(f)
        kernel_ms = []
        for _ in range(REPEATS):
            np.copyto(box.frame.host, frames[0])
            drv.memcpy_htod(box.frame.device_ptr, box.frame.host)
            start.record(box.stream)
            for _ in range(FRAMES):
                box.kernel.launch(box.frame.device_ptr, box.frame.row_step, int(box.output),
                                  box.stream)
            end.record(box.stream)
            end.synchronize()
            kernel_ms.append(end.time_since(start) / FRAMES)
    e2e_ms = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for f in frames:
            box(f)
        e2e_ms.append((time.perf_counter() - t0) * 1000 / FRAMES)
    cpu = Letterbox(plan)
    out = cpu.new_buffer()[0]
    cpu_ms = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for f in frames:
            cpu(f, out)
        cpu_ms.append((time.perf_counter() - t0) * 1000 / FRAMES)
    diff = np.abs(box(frames[5]) - cpu(frames[5], out)).max() * 255
    k, e, c = (statistics.median(v) for v in (kernel_ms, e2e_ms, cpu_ms))
    print(f"letterbox {w}x{h} -> {plan.dst_w}x{plan.dst_h} float32, {FRAMES} frames x "
          f"{REPEATS}, medians; GPU {gpu.name}, cv2 threads {cv2.getNumThreads()}")
    print(f"  CUDA kernel only            {k:8.4f} ms/frame")
    print(f"  upload + kernel + download  {e:8.4f} ms/frame (pinned, synchronous)")
    print(f"  CPU Letterbox (cv2 + numpy) {c:8.4f} ms/frame")
    print(f"  CPU / kernel = {c / k:.1f}x, CPU / end-to-end = {c / e:.1f}x; "
          f"max |GPU - CPU| = {diff:.3f}/255")
    box.close()


if __name__ == "__main__":
    main()
