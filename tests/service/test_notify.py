"""Tests for lepton_edge.service.notify against real AF_UNIX datagram sockets bound as
NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_edge.service import notify
from lepton_edge.service.notify import SystemdNotifier

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer than that.
_SUN_PATH_MAX = 107


class Receiver:
    """The systemd side: a bound SOCK_DGRAM socket and the value for $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, env_value: str, path: Path | None) -> None:
        self.sock = sock
        self.env_value = env_value
        self.path = path

    def recv(self, timeout: float = 2.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096)

    def assert_empty(self) -> None:
        self.sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            data = self.sock.recv(4096)
            pytest.fail(f"unexpected message {data!r}")


def _bind_path(directory: Path) -> Receiver:
    path = directory / "notify.sock"
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        path = Path(tempfile.mkdtemp(prefix="le-")) / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return Receiver(sock, str(path), path)


def _bind_abstract() -> Receiver:
    name = f"lepton-edge-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    return Receiver(sock, "@" + name, None)


@pytest.fixture(params=["path", "abstract"])
def receiver(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Receiver]:
    rx = _bind_path(tmp_path) if request.param == "path" else _bind_abstract()
    monkeypatch.setenv("NOTIFY_SOCKET", rx.env_value)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield rx
    rx.sock.close()
    if rx.path is not None:
        rx.path.unlink(missing_ok=True)


# --- messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.status("gate-1: 14.9 fps"), b"STATUS=gate-1: 14.9 fps"),
        (lambda n: n.status("first line\nsecond line"), b"STATUS=first line second line"),
        (lambda n: n.status("caf\u00e9"), "STATUS=caf\u00e9".encode()),
        (lambda n: n.extend_timeout(2.5), b"EXTEND_TIMEOUT_USEC=2500000"),
        (lambda n: n.notify(READY=1, STATUS="up"), b"READY=1\nSTATUS=up"),
        (lambda n: n.notify(STATUS="up", READY=True), b"STATUS=up\nREADY=1"),
        (lambda n: n.notify(ERRNO=5), b"ERRNO=5"),
    ],
    ids=[
        "ready",
        "watchdog",
        "stopping",
        "status",
        "status-multiline",
        "status-utf8",
        "extend-timeout",
        "fields-in-order",
        "bool-as-1",
        "errno",
    ],
)
def test_message_bytes(receiver: Receiver, send, expected: bytes) -> None:
    notifier = SystemdNotifier()
    assert notifier.enabled
    send(notifier)
    assert receiver.recv() == expected
    receiver.assert_empty()
    notifier.close()


def test_reloading_sends_monotonic_usec(receiver: Receiver) -> None:
    notifier = SystemdNotifier()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=(\d+)", receiver.recv())
    assert match is not None
    assert before <= int(match.group(1)) <= after
    notifier.close()


def test_one_datagram_per_call(receiver: Receiver) -> None:
    notifier = SystemdNotifier()
    notifier.ready()
    notifier.status("warming up")
    notifier.watchdog()
    assert [receiver.recv() for _ in range(3)] == [b"READY=1", b"STATUS=warming up", b"WATCHDOG=1"]
    notifier.close()


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"ready": 1}, "field name"),
        ({"Status": "x"}, "field name"),
        ({"STATUS": "a\nb"}, "one line"),
    ],
)
def test_invalid_fields_raise(receiver: Receiver, fields: dict, error: str) -> None:
    notifier = SystemdNotifier()
    with pytest.raises(ValueError, match=error):
        notifier.notify(**fields)
    receiver.assert_empty()


def test_environ_argument_overrides_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx = _bind_path(tmp_path)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with SystemdNotifier({"NOTIFY_SOCKET": rx.env_value}) as notifier:
        notifier.ready()
    assert rx.recv() == b"READY=1"
    rx.sock.close()


# --- watchdog interval ---------------------------------------------------------------------

OWN_PID = "own"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", OWN_PID, 15.0),
        ("1000000", OWN_PID, 0.5),
        ("30000000", "1", None),  # inherited from another process (PID 1 is never us)
        ("30000000", "not-a-pid", None),
        (None, None, None),
        (None, OWN_PID, None),
        ("", None, None),
        ("0", None, None),
        ("-30000000", None, None),
        ("30s", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == OWN_PID else value)
    assert SystemdNotifier().watchdog_interval() == expected


# --- disabled ------------------------------------------------------------------------------


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    def no_socket(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("a disabled notifier must not open a socket")

    monkeypatch.setattr(notify.socket, "socket", no_socket)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.status("x")
    notifier.stopping()
    notifier.reloading()
    notifier.notify(READY=1)
    notifier.close()
    notifier.close()


def test_unsupported_socket_address_disables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    with caplog.at_level(logging.WARNING, logger="lepton_edge.service.notify"):
        notifier = SystemdNotifier()
    assert not notifier.enabled
    assert "vsock:2:1234" in caplog.text
    notifier.ready()  # no error


def test_close_twice_then_send_is_dropped(receiver: Receiver) -> None:
    notifier = SystemdNotifier()
    notifier.ready()
    assert receiver.recv() == b"READY=1"
    notifier.close()
    notifier.close()
    notifier.watchdog()
    receiver.assert_empty()


# --- failures never raise --------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records
        if r.name == "lepton_edge.service.notify" and r.levelno >= logging.WARNING
    ]


def test_vanished_socket_warns_once_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rx = _bind_path(tmp_path)
    assert rx.path is not None
    monkeypatch.setenv("NOTIFY_SOCKET", rx.env_value)
    notifier = SystemdNotifier()
    notifier.ready()
    assert rx.recv() == b"READY=1"

    # systemd goes away: the socket is closed and its file removed.
    rx.sock.close()
    rx.path.unlink()
    with caplog.at_level(logging.DEBUG, logger="lepton_edge.service.notify"):
        notifier.watchdog()
        notifier.status("still running")
        notifier.watchdog()
    warnings = _warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "ENOENT" in warnings[0].getMessage()
    assert rx.env_value in warnings[0].getMessage()

    # It comes back at the same path: messages flow again, and a later outage warns again.
    back = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    back.bind(str(rx.path))
    back.settimeout(2.0)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="lepton_edge.service.notify"):
        notifier.watchdog()
        assert back.recv(4096) == b"WATCHDOG=1"
        back.close()  # the file stays: now the error is ECONNREFUSED
        notifier.watchdog()
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "ECONNREFUSED" in warnings[0].getMessage()
    notifier.close()


def test_full_receive_queue_does_not_block(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody reads the socket: sends must fail fast (EAGAIN), not stall the caller."""
    qlen_file = Path("/proc/sys/net/unix/max_dgram_qlen")
    qlen = int(qlen_file.read_text()) if qlen_file.exists() else 10
    count = min(qlen + 20, 2000)
    notifier = SystemdNotifier()
    done = threading.Event()

    def flood() -> None:
        for _ in range(count):
            notifier.watchdog()
        done.set()

    thread = threading.Thread(target=flood, daemon=True)
    with caplog.at_level(logging.WARNING, logger="lepton_edge.service.notify"):
        thread.start()
        assert done.wait(5.0), "notify blocked on a full socket queue"
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert "EAGAIN" in warnings[0].getMessage()
    notifier.close()


def test_concurrent_senders_share_one_socket(receiver: Receiver) -> None:
    threads_n = 8  # below the default datagram queue length (10): no drops without a reader
    notifier = SystemdNotifier()
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait()
            notifier.status(f"thread {i}")
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5.0)
    assert not errors
    received = sorted(receiver.recv() for _ in range(threads_n))
    assert received == sorted(f"STATUS=thread {i}".encode() for i in range(threads_n))
    notifier.close()
