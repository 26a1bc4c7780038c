from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.auth

from lepton_edge.config import Curve, Publish
from lepton_edge.errors import ConfigError
from lepton_edge.keys import create_keypair
from lepton_edge.messages import DetectionMessage, decode
from lepton_edge.sinks.publisher import HandshakeDenials, Publisher
from lepton_edge.sinks.recorder import RecorderSink
from lepton_edge.subscribe import Subscriber, load_client_keys
from tests.test_messages import payload


def test_publishes_counts_subscribers_and_records(tmp_path: Path) -> None:
    ctx = zmq.Context()
    pub = Publisher(ctx, Publish(endpoint="tcp://127.0.0.1:0"))
    recorder = RecorderSink(tmp_path / "r.jsonl")
    recorder.open()
    pub.open()
    try:
        endpoint = pub.bound_endpoint
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith(":0")
        with Subscriber(endpoint, context=ctx) as sub:
            assert pub.wait_for_subscribers(1, timeout=5)
            pub.send("det.gate-1", payload())
            recorder.frame(None, payload())  # type: ignore[arg-type]  (the payload is recorded)
            msg = sub.receive(timeout=5)
            assert msg is not None and msg.camera == "gate-1"
        pub.close()
        recorder.close()
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
        with caplog.at_level(logging.INFO, logger="lepton_edge.sinks.publisher"):
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


# ------------------------------------------------------------------ CURVE (#15.3, #15.7)

curve = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


@dataclass
class Keys:
    settings: Publish
    allowed_dir: Path
    server_public: bytes
    client: tuple[bytes, bytes]
    stranger: tuple[bytes, bytes]


def make_keys(tmp_path: Path) -> Keys:
    keys, allowed = tmp_path / "keys", tmp_path / "keys" / "clients"
    allowed.mkdir(parents=True)
    server_public, server_secret = create_keypair(keys, "server")
    client_public, client_secret = create_keypair(keys, "control-room")
    _, stranger_secret = create_keypair(tmp_path / "elsewhere", "stranger")
    shutil.copy(client_public, allowed)
    settings = Publish(endpoint="tcp://127.0.0.1:0",
                       curve=Curve(server_secret_key=str(server_secret),
                                   allowed_clients=str(allowed)))
    return Keys(settings, allowed, zmq.auth.load_certificate(server_public)[0],
                load_client_keys(client_secret), load_client_keys(stranger_secret))


def serve_until_received(pub: Publisher, sub: Subscriber, seconds: float) -> list[object]:
    """Publish a detection every 50 ms for `seconds`, polling like the daemon does; returns
    what `sub` received."""
    got: list[object] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pub.poll_subscriptions()
        pub.send("det.gate-1", payload())
        msg = sub.receive(timeout=0.05)
        if msg is not None:
            got.append(msg)
    return got


@curve
def test_a_bad_file_in_allowed_clients_is_skipped_by_name_the_valid_keys_still_work(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = make_keys(tmp_path)
    (keys.allowed_dir / "broken.key").write_text("this is not a certificate\n")
    (keys.allowed_dir / "short.key").write_text('metadata\ncurve\n    public-key = "abc12"\n')
    shutil.copy(tmp_path / "keys" / "control-room.key_secret", keys.allowed_dir)
    ctx = zmq.Context()
    pub = Publisher(ctx, keys.settings)
    try:
        with caplog.at_level(logging.WARNING, logger="lepton_edge.sinks.publisher"):
            pub.open()
        skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
        assert len(skipped) == 3, skipped
        assert any("broken.key: no public-key line" in m for m in skipped), skipped
        assert any("short.key: public-key is 5 characters" in m for m in skipped), skipped
        assert any("control-room.key_secret: a secret key" in m for m in skipped), skipped
        with Subscriber(pub.bound_endpoint, context=ctx, curve_server_public=keys.server_public,
                        curve_client_keys=keys.client) as allowed:
            got = serve_until_received(pub, allowed, 3)
        assert got, "the valid client key was locked out by the bad files next to it"
    finally:
        pub.close()
        ctx.term()


@curve
def test_allowed_clients_without_one_usable_key_refuses_to_start(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    (keys.allowed_dir / "control-room.key").write_text("garbage\n")
    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"no usable client public key .*control-room\.key: "
                                              r"no public-key line"):
            Publisher(ctx, keys.settings).open()
        (keys.allowed_dir / "control-room.key").unlink()
        with pytest.raises(ConfigError, match=r"no usable client public key .*it is empty"):
            Publisher(ctx, keys.settings).open()
    finally:
        ctx.term()  # would hang if a refused open left its socket or authenticator behind


@curve
def test_refused_handshakes_are_logged_with_their_reason_rate_limited(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = make_keys(tmp_path)
    wrong_server_public, _ = zmq.curve_keypair()
    ctx = zmq.Context()
    pub = Publisher(ctx, keys.settings)
    pub.open()
    endpoint = pub.bound_endpoint
    subs = [Subscriber(endpoint, context=ctx, **opts) for opts in (
        {"curve_server_public": keys.server_public, "curve_client_keys": keys.client},
        {},  # no CURVE at all
        {"curve_server_public": keys.server_public, "curve_client_keys": keys.stranger},
        {"curve_server_public": wrong_server_public, "curve_client_keys": keys.client},
    )]
    try:
        with caplog.at_level(logging.WARNING, logger="lepton_edge.sinks.publisher"):
            got = serve_until_received(pub, subs[0], 3)
            assert got, "the allowed client got nothing"
            assert all(s.receive(timeout=0.1) is None for s in subs[1:])
            pub.close()  # the last refusals are reported at close
        lines = [r.getMessage() for r in caplog.records if "CURVE: refused" in r.getMessage()]
        assert 1 <= len(lines) <= 2, lines  # the first at once, the rest in one line at close
        text = " ".join(lines)
        stranger = keys.stranger[0].decode()
        assert "without CURVE keys" in text and "with the wrong server public key" in text
        assert "with a client key not in allowed_clients" in text
        assert f"{stranger} from 127.0.0.1" in text and str(keys.allowed_dir) in text
        assert pub._denials is not None and pub._denials.total >= 10  # the wrong-key client
        # retries every 100 ms: each attempt counted, not each one a log line
    finally:
        for s in subs:
            s.close()
        pub.close()
        ctx.term()


def test_denial_report_is_at_most_one_line_per_interval() -> None:
    denials = HandshakeDenials(Path("keys/clients"), interval=30.0)
    assert denials.report(0.0) is None
    denials.protocol_error(zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    first = denials.report(100.0)
    assert first is not None and "refused 1 subscriber handshake(s)" in first
    for key in "ABCDE":
        denials.unknown_key(key * 40, "10.0.0.7")
    assert denials.report(129.9) is None
    later = denials.report(130.0)
    assert later is not None and "refused 5 subscriber handshake(s)" in later
    assert f"{'A' * 40} from 10.0.0.7" in later and "and 2 more" in later
    assert denials.report(1000.0) is None  # nothing new
    denials.protocol_error(zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    denials.hung_up()
    assert denials.report(159.9) is None
    last = denials.report(159.9, force=True)  # at close
    assert last is not None and "1 without CURVE keys" in last and "1 that hung up" in last
