from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest
import zmq

from lepton_edge.config import Publish
from lepton_edge.errors import ConfigError
from lepton_edge.messages import DetectionMessage, decode
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


# ------------------------------------------------------------------ ipc:// ownership (#15.2)


def short_dir() -> Path:
    """A short directory for unix sockets (a socket path is limited to 107 bytes)."""
    return Path(tempfile.mkdtemp(prefix="lep-"))


def test_second_publisher_on_a_live_ipc_socket_is_refused_first_keeps_serving() -> None:
    path = short_dir() / "det.sock"
    settings = Publish(endpoint=f"ipc://{path}")
    ctx = zmq.Context()
    first, second = Publisher(ctx, settings), Publisher(ctx, settings)
    first.open()
    try:
        with pytest.raises(ConfigError, match="in use: another daemon is listening on it"):
            second.open()
        with Subscriber(first.bound_endpoint, context=ctx) as sub:  # still the first's socket
            assert first.wait_for_subscribers(1, timeout=5)
            first.send("det.gate-1", payload())
            msg = sub.receive(timeout=5)
        assert isinstance(msg, DetectionMessage) and msg.camera == "gate-1"
        assert path.exists()
        first.close()
        assert not path.exists(), "the socket file outlived a clean close"
    finally:
        first.close()
        second.close()
        ctx.term()
        shutil.rmtree(path.parent)


def test_stale_ipc_socket_is_removed_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    path = short_dir() / "det.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # what a killed daemon leaves: the file, nobody listening
    dead.close()
    path.chmod(0o600)
    assert stat.S_ISSOCK(path.lstat().st_mode)
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint=f"ipc://{path}", ipc_mode=0o660))
    try:
        with caplog.at_level(logging.INFO, logger="lepton_edge.publish"):
            pub.open()
        assert f"removing the stale socket file {path}" in caplog.text
        assert stat.S_IMODE(path.lstat().st_mode) == 0o660  # a new file, made by this bind
        with Subscriber(pub.bound_endpoint, context=ctx) as sub:
            assert pub.wait_for_subscribers(1, timeout=5)
            pub.send("det.gate-1", payload())
            assert sub.receive(timeout=5) is not None
        pub.close()
        assert not path.exists()
    finally:
        pub.close()
        ctx.term()
        shutil.rmtree(path.parent)


def test_ipc_path_that_is_not_a_socket_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "det.sock"
    path.write_text("someone's file")
    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match="exists and is not a socket"):
            Publisher(ctx, Publish(endpoint=f"ipc://{path}")).open()
        assert path.read_text() == "someone's file"
    finally:
        ctx.term()


def test_close_leaves_a_socket_file_that_is_no_longer_ours() -> None:
    path = short_dir() / "det.sock"
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint=f"ipc://{path}"))
    pub.open()
    try:
        path.unlink()  # an operator removed it, and something else bound the name since
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(path))
        other.listen()
        pub.close()
        assert path.exists()
        other.close()
    finally:
        pub.close()
        ctx.term()
        shutil.rmtree(path.parent)
