"""Subscribers that read slowly or not at all.

Pass criterion: the daemon's publish rate with a stuck and a slow subscriber attached stays
within noise of the rate without them (at least SLOWDOWN_FLOOR of the lower of two baselines,
measured before and after); the slow readers lose messages, and the loss is visible to them as
seq gaps, while a subscriber that keeps up misses nothing.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from lepton_edge.messages import DetectionMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import VTEST, write_config
from tests.faults.watch import Watch, row

WINDOW_S = 4.0
SLOWDOWN_FLOOR = 0.5  # a blocked publisher drops the rate to ~0; a shared 2-core box: +-40 %


def rate(w: Watch, seconds: float) -> float:
    """Messages per second the daemon published during the next `seconds` (its own counter,
    from health)."""
    def published() -> tuple[float, int]:
        h = w.last_health()
        assert h is not None
        return h.ts, h.cameras[0].published

    n0 = len(w.health())
    w.until(lambda: len(w.health()) > n0, 5, what="a health message")
    t0, p0 = published()
    w.pump(seconds)
    n1 = len(w.health())
    w.until(lambda: len(w.health()) > n1, 5, what="a health message")
    t1, p1 = published()
    return (p1 - p0) / (t1 - t0)


def test_slow_and_stuck_subscribers_do_not_slow_inference(tmp_path: Path, start_daemon) -> None:
    # Large messages (a low score threshold and a loose NMS: ~300 boxes, ~25 KiB) over ipc://
    # (a unix socket buffers ~200 KiB, where loopback TCP buffers megabytes) and a small
    # high-water mark: a slow reader's queue fills within seconds.
    cfg = write_config(tmp_path / "c.yaml", input_size=320,
                       thresholds={"score": 0.01, "iou": 0.95, "max_detections": 300},
                       publish={"endpoint": f"ipc://{tmp_path}/pub.sock", "hwm": 20,
                                "health_interval": 0.5},
                       cameras=[{"id": "loop", "url": str(VTEST), "mode": "bench",
                                 "loop": True}])
    daemon = start_daemon(cfg)
    ctx = zmq.Context()
    stop = threading.Event()
    slow_read = 0
    try:
        with Watch(daemon.endpoint) as w:
            w.until(lambda: w.count("loop") >= 20, 60, what="frames flowing")
            before = rate(w, WINDOW_S)
            stuck = Subscriber(daemon.endpoint, context=ctx, hwm=10)
            slow = Subscriber(daemon.endpoint, context=ctx, hwm=10)

            def read_slowly() -> None:
                nonlocal slow_read
                while not stop.is_set():
                    if isinstance(slow.receive(timeout=0.25), DetectionMessage):
                        slow_read += 1
                    time.sleep(0.25)

            reader = threading.Thread(target=read_slowly, daemon=True)
            reader.start()
            during = rate(w, 2 * WINDOW_S)
            subscribers = w.last_health().subscribers  # type: ignore[union-attr]
            stop.set()
            reader.join(5)
            # Drops happen at the tail of a full queue: the slow reader sees the gap once it
            # reads past what was queued, so let it catch up for a moment.
            catch_up = time.monotonic() + 3.0
            while time.monotonic() < catch_up and slow.receive(timeout=0.2) is not None:
                pass
            size = len(w.dets("loop")[-1].detections)
            slow_missed = slow.missed.get("loop", 0)
            stuck.close()
            slow.close()
            after = rate(w, WINDOW_S)
            fast_missed = w.missed.get("loop", 0)
    finally:
        ctx.term()
    baseline = min(before, after)
    print(f"\npublish rate: before {before:.1f}/s, with slow+stuck {during:.1f}/s, after "
          f"{after:.1f}/s; slow reader got {slow_read}, missed {slow_missed}; "
          f"fast reader missed {fast_missed};"
          f" subscriptions reported {subscribers}; {size} boxes per message")
    passed = during >= SLOWDOWN_FLOOR * baseline and slow_missed > 0 and fast_missed == 0
    row("slow + stuck subscriber", None,
        f"{slow_missed} to the slow reader, {fast_missed} to the fast one", passed)
    assert during >= SLOWDOWN_FLOOR * baseline, (before, during, after)
    assert slow_missed > 0, "the slow reader lost nothing: the test is too gentle"
    assert fast_missed == 0, "a reader that keeps up lost messages"
    assert subscribers >= 6  # three subscribers x (det. + health) topics
    assert daemon.stop() == 0, daemon.stderr()
