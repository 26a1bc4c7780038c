"""CPU per frame of each thread of the daemon, in-process, over one bench run of a config,
from its first published frame to its end: the per-thread figures behind `lepton-edge bench`'s
end-to-end ratio (Linux: /proc thread stats).

    python bench/thread_cpu.py [--config deploy/bench.yaml] [--backend openvino:int8]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lepton_edge.devtools.bench import resolve_bench  # noqa: E402
from lepton_edge.service.daemon import Daemon  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_times() -> dict[int, tuple[str, float]]:
    """Native thread id -> (its OS name, CPU seconds)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=REPO / "deploy" / "bench.yaml")
    ap.add_argument("--backend", default="openvino:int8")
    ap.add_argument("--frames", type=int, default=0)
    args = ap.parse_args()
    run = resolve_bench(args.config, args.backend, args.frames)
    names: dict[int, str] = {}
    orig = threading.Thread.run

    def named_run(self: threading.Thread) -> None:  # Python names -> native ids
        names[threading.get_native_id()] = self.name
        orig(self)

    threading.Thread.run = named_run  # type: ignore[method-assign]
    daemon = Daemon(run)
    # Counted from the first published frame: the model's load and compile, the warm-up and
    # the threads' start are not per-frame costs.
    before: dict[int, tuple[str, float]] = {}
    start = {"frames": 0}
    seen: dict[int, tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:  # threads end with the run: keep each one's last reading
        while not done.wait(0.1):
            p = daemon.pipeline
            if not before and p is not None and p.stats.first_result.is_set():
                before.update(thread_times())
                start["frames"] = p.stats.published_frames
            if before:
                seen.update(thread_times())

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    code = daemon.run()
    done.set()
    sampler.join()
    after = {**seen, **thread_times()}
    assert daemon.pipeline is not None
    frames = daemon.pipeline.stats.published_frames - start["frames"]
    rows: dict[str, float] = {}
    for tid, (comm, cpu) in after.items():
        used = cpu - before.get(tid, (comm, 0.0))[1]
        if tid == os.getpid():
            label = "main"
        elif tid in names:
            label = names[tid]
            label = "capture" if label.startswith(("source", "capture", "cam")) else label
        else:
            label = f"native ({comm})"  # the runtime's own inference threads
        if label != "sampler":  # the measurement itself
            rows[label] = rows.get(label, 0.0) + used
    total = sum(rows.values())
    print(f"{frames} frames, exit {code}; CPU ms per frame by thread:")
    for label, cpu in sorted(rows.items(), key=lambda kv: -kv[1]):
        print(f"  {label:>32}: {1000 * cpu / max(frames, 1):7.2f}")
    print(f"  {'all listed':>32}: {1000 * total / max(frames, 1):7.2f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
