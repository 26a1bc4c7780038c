"""How many cameras this box sustains: N cameras replaying the bundled clips at their own frame
rate (vtest.avi 10 fps, bikes.mp4 25 fps, alternating), each with `detect: {fps: 5}`, through
the real daemon for a fixed time per N. Prints the curve: cameras -> published fps in all and
per camera, p99 capture-to-publish, frames dropped by the live mailboxes, process CPU.

A camera count is sustained when every camera publishes at least 90 % of its detect rate and
p99 capture-to-publish stays under 500 ms. `--hints` also runs the largest count with each
OpenVINO hint and with the inference streams pinned to cores (OpenVINO's own default under the
throughput hint, which the backend turns off), to show whether throughput collapses under
oversubscription (16 capture threads on 2 cores).

    python bench/bench_cameras.py [--counts 1,4,8,12,16,20] [--seconds 20]
        [--backend openvino:int8] [--detect-fps 5] [--hints]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lepton_edge.config import Override  # noqa: E402
from lepton_edge.devtools.bench import spec_overrides  # noqa: E402
from lepton_edge.run import resolve_run  # noqa: E402
from lepton_edge.service.daemon import Daemon  # noqa: E402

CLIPS = (REPO / "samples" / "vtest.avi", REPO / "samples" / "bikes.mp4")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_cameras(n: int, seconds: float, spec: str, detect_fps: float,
                extra: list[Override]) -> dict:
    cameras = [{"id": f"cam{i:02d}", "url": str(CLIPS[i % 2]), "mode": "replay", "loop": True,
                "detect": {"fps": detect_fps}} for i in range(n)]
    run = resolve_run(REPO / "deploy" / "bench.yaml", [
        *spec_overrides(spec), *extra,
        Override("cameras", cameras, "bench_cameras"),
        Override("publish.endpoint", "tcp://127.0.0.1:0", "bench_cameras"),
        Override("log_level", "warning", "bench_cameras"),
    ])
    daemon = Daemon(run)
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("code", daemon.run()), daemon=True)
    t.start()
    while daemon.pipeline is None or not daemon.pipeline.stats.first_result.is_set():
        time.sleep(0.1)
        if not t.is_alive():
            raise SystemExit(f"the daemon exited before its first frame: {result}")
    time.sleep(3.0)  # cameras connected, OpenVINO warm
    p = daemon.pipeline
    start = {c: s.published for c, s in p.stats.cameras.items()}
    drops0 = sum(s.stats().dropped for s in p.sources())
    cpu0, t0 = cpu_seconds(), time.monotonic()
    lat0 = {k: p.stats.latency.count(k) for k in ("capture_to_publish", "infer")}
    time.sleep(seconds)
    wall, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    published = {c: s.published - start.get(c, 0) for c, s in p.stats.cameras.items()}
    window = {k: p.stats.latency.recent(k, p.stats.latency.count(k) - n0)
              for k, n0 in lat0.items()}  # this window's samples only, not the warm-up
    drops = sum(s.stats().dropped for s in p.sources()) - drops0
    daemon.request_stop()
    t.join(30)
    per_cam = [v / wall for v in published.values()]
    c2p, infer = window["capture_to_publish"], window["infer"]

    def pct(a: np.ndarray, q: float) -> float:
        return round(float(np.percentile(a, q)), 1) if a.size else 0.0

    return {"cameras": n, "fps_total": round(sum(per_cam), 1),
            "fps_min_camera": round(min(per_cam), 2), "fps_mean_camera": round(sum(per_cam) / n, 2),
            "p50_ms": pct(c2p, 50), "p99_ms": pct(c2p, 99), "infer_p50_ms": pct(infer, 50),
            "dropped": drops, "cpu_cores": round(cpu / wall, 2),
            "sustained": min(per_cam) >= 0.9 * detect_fps and pct(c2p, 99) < 500,
            "samples": int(c2p.size)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1,4,8,12,16,20")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backend", default="openvino:int8")
    ap.add_argument("--detect-fps", type=float, default=5.0)
    ap.add_argument("--hints", action="store_true",
                    help="also run the largest count with hint=latency, hint=throughput and "
                         "pinning=true")
    args = ap.parse_args()
    rows = []
    print(f"{'cams':>4} {'fps all':>8} {'min/cam':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'infer':>6} {'drops':>6} {'cpu':>5}  sustained", flush=True)
    variants = [(n, args.backend) for n in map(int, args.counts.split(","))]
    if args.hints:
        top = variants[-1][0]
        variants += [(top, f"{args.backend},hint=latency"),
                     (top, f"{args.backend},hint=throughput"),
                     (top, f"{args.backend},pinning=true")]
    for n, spec in variants:
        r = run_cameras(n, args.seconds, spec, args.detect_fps, [])
        r["backend"] = spec
        rows.append(r)
        print(f"{n:>4} {r['fps_total']:>8} {r['fps_min_camera']:>8} {r['p50_ms']:>8} "
              f"{r['p99_ms']:>8} {r['infer_p50_ms']:>6} {r['dropped']:>6} {r['cpu_cores']:>5}  "
              f"{'yes' if r['sustained'] else 'NO'}  {spec}", flush=True)
    ok = [r["cameras"] for r in rows if r["sustained"] and r["backend"] == args.backend]
    print(f"sustained up to {max(ok) if ok else 0} cameras at {args.detect_fps:g} fps each "
          f"({os.cpu_count()} CPUs)")
    print(json.dumps({"results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
