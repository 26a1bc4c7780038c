"""A subscriber that connects, disconnects and reconnects many times.

Pass criterion: after CYCLES connect/close cycles (half of them waiting for a message first, half
closing at once) the daemon's open file descriptors and subscription count are back to where
they were, its RSS grew by less than RSS_SLACK_KIB, and a steady subscriber saw no stall (no gap
over PAUSE_S in capture times) and no lost message.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import zmq

from lepton_edge.subscribe import Subscriber
from tests.conftest import VTEST, write_config
from tests.faults.watch import Watch, max_gap, row

CYCLES = 200
PAUSE_S = 2.0
FD_SLACK = 4  # a socket in the middle of closing
RSS_SLACK_KIB = 8 * 1024


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_connect_disconnect_churn(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}])
    daemon = start_daemon(cfg)
    pid = daemon.proc.pid
    ctx = zmq.Context()
    try:
        with Watch(daemon.endpoint) as w:
            w.until(lambda: w.count("plaza") >= 10, 60, what="frames flowing")
            w.pump(1.0)
            subs0 = w.last_health().subscribers  # type: ignore[union-attr]
            fds0, rss0 = fds(pid), rss_kib(pid)
            t0 = time.monotonic()
            received = 0
            for i in range(CYCLES):
                with Subscriber(daemon.endpoint, context=ctx) as churn:
                    if i % 2 == 0 and churn.receive(timeout=5) is not None:
                        received += 1
                w.pump(0.0)
            churn_s = time.monotonic() - t0
            w.until(lambda: w.last_health().subscribers == subs0  # type: ignore[union-attr]
                    and fds(pid) <= fds0 + FD_SLACK, 15,
                    what="subscriptions and descriptors back to the baseline")
            t_settled = time.monotonic() - t0 - churn_s
            w.pump(1.0)
            fds1, rss1 = fds(pid), rss_kib(pid)
            subs1 = w.last_health().subscribers  # type: ignore[union-attr]
    finally:
        ctx.term()
    gap = max_gap([m.ts for m in w.dets("plaza")])
    missed = w.missed.get("plaza", 0)
    print(f"\n{CYCLES} cycles in {churn_s:.1f} s ({received} waited for a message); settled "
          f"{t_settled:.2f} s after; fds {fds0}->{fds1}, RSS {rss0}->{rss1} KiB, subscriptions "
          f"{subs0}->{subs1}, steady reader max gap {gap:.2f} s, missed {missed}")
    passed = (fds1 <= fds0 + FD_SLACK and rss1 - rss0 < RSS_SLACK_KIB and subs1 == subs0
              and gap < PAUSE_S and missed == 0)
    row(f"subscriber churn x{CYCLES}", t_settled, missed, passed)
    assert received == CYCLES // 2
    assert subs1 == subs0
    assert fds1 <= fds0 + FD_SLACK, f"descriptors {fds0} -> {fds1}"
    assert rss1 - rss0 < RSS_SLACK_KIB, f"RSS {rss0} -> {rss1} KiB"
    assert gap < PAUSE_S and missed == 0
    assert daemon.stop() == 0, daemon.stderr()
