from __future__ import annotations

import os
import stat
from pathlib import Path

import zmq

from lepton_edge.config import Publish
from lepton_edge.messages import decode
from lepton_edge.publish import Publisher
from lepton_edge.subscribe import Subscriber

from .test_messages import payload


def test_publishes_counts_subscribers_and_records(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint="tcp://127.0.0.1:0"), record=tmp_path / "r.jsonl")
    pub.open()
    try:
        endpoint = pub.bound_endpoint
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
        with Subscriber(endpoint, context=ctx) as sub:
            assert pub.wait_for_subscribers(1, timeout=5)
            pub.send("det.gate-1", payload())
            msg = sub.receive(timeout=5)
            assert msg is not None and msg.camera == "gate-1"
        pub.close()
        lines = (tmp_path / "r.jsonl").read_bytes().splitlines()
        assert lines == [payload()]
        assert decode("det.gate-1", lines[0]).seq == 3
    finally:
        pub.close()
        ctx.term()


def test_send_never_blocks_without_or_with_stuck_subscribers() -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint="tcp://127.0.0.1:0", hwm=5))
    pub.open()
    stuck = ctx.socket(zmq.SUB)
    stuck.setsockopt(zmq.RCVHWM, 1)
    stuck.setsockopt(zmq.SUBSCRIBE, b"")
    stuck.connect(pub.bound_endpoint)
    try:
        assert pub.wait_for_subscribers(1, timeout=5)
        for _ in range(5000):  # nobody reads: PUB drops past the high-water mark
            pub.send("det.x", b"{}" * 1000)
        assert pub.sent == 5000
    finally:
        stuck.close(0)
        pub.close()
        ctx.term()


def test_ipc_endpoint_gets_group_only_permissions(tmp_path: Path) -> None:
    ctx = zmq.Context()
    path = tmp_path / "run" / "det.sock"
    pub = Publisher(ctx, Publish(endpoint=f"ipc://{path}", ipc_mode=0o660))
    pub.open()
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == 0o660
    finally:
        pub.close()
        ctx.term()
