"""The ZeroMQ publisher: multipart `[topic, payload]` on an XPUB socket.

XPUB sends exactly like PUB (a subscriber past its high-water mark loses messages, inference
never waits), and also tells us who subscribed: health reports the count, and a bench run can
wait for its subscriber before sending frame 0. Losses are visible to readers through the
gap-free per-camera `seq`. One ZeroMQ context per process, passed in. The socket is used only
by the pipeline's publishing thread.

An `ipc://` endpoint belongs to one daemon: libzmq's bind would silently take over a socket
file another daemon listens on, so `open()` first connects to it and refuses when something
answers; a file nobody answers on (a daemon that died) is removed, and `close()` removes ours.

With CURVE, every refused handshake is counted (ZAP for unknown client keys, the socket
monitor for clients without CURVE or with the wrong server key) and logged as a warning at most
once per `DENIAL_LOG_INTERVAL`: a rejected client gets no answer, so the log is the only place
where anyone can see why it receives nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from lepton_edge.config import Publish
from lepton_edge.errors import ConfigError
from lepton_edge.keys import AllowedClients, load_allowed_clients

log = logging.getLogger(__name__)

DENIAL_LOG_INTERVAL = 30.0  # seconds between two warnings about refused CURVE handshakes
# AUTH comes with ZAP's refusals, counted by the authenticator (which knows the key); a client
# without CURVE shows as PROTOCOL (mechanism mismatch) or, when its reset wins the race with
# its own greeting (a third of the time here), as NO_DETAIL.
_MONITORED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class Publisher:
    def __init__(self, context: zmq.Context, settings: Publish,
                 resolve: Callable[[str], Path] = Path) -> None:
        self.settings = settings
        self._resolve = resolve  # a key path from the config: relative to the config file
        self.endpoint = settings.endpoint  # --endpoint arrives as a validated config override
        self._ctx = context
        self._sock: zmq.Socket | None = None
        self._auth: Any = None
        self._monitor: zmq.Socket | None = None
        self._denials: HandshakeDenials | None = None
        self._ipc_file: tuple[Path, int, int] | None = None  # (path, st_dev, st_ino) we bound
        self.subscriptions = 0
        self.sent = 0
        self.send_errors = 0

    def open(self) -> None:
        sock = self._ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, self.settings.hwm)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe, so the count is right
        sock.setsockopt(zmq.LINGER, 1000)  # at exit, a second to flush the last messages
        try:
            ipc_path = _ipc_file_path(self.endpoint)
            if ipc_path is not None:
                ipc_path.parent.mkdir(parents=True, exist_ok=True)
                _claim_ipc_path(ipc_path, self.endpoint)
            if self.settings.curve is not None:
                self._setup_curve(sock)
            self._bind(sock, ipc_path)
        except BaseException:
            self._close_auth(sock)
            sock.close(0)  # an open socket would block Context.term() at teardown forever
            raise
        self._sock = sock
        log.info("publishing on %s (hwm %d)", self.bound_endpoint, self.settings.hwm)

    def _bind(self, sock: zmq.Socket, ipc_path: Path | None) -> None:
        old_umask = None
        if ipc_path is not None:
            old_umask = os.umask(0o777 & ~self.settings.ipc_mode)  # born with the right mode
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as err:
            raise ConfigError(f"publish.endpoint: cannot bind {self.endpoint} ({err}); "
                              f"is another daemon using it?") from err
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if ipc_path is not None:
            os.chmod(ipc_path, self.settings.ipc_mode)
            st = ipc_path.stat()
            self._ipc_file = (ipc_path, st.st_dev, st.st_ino)

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (with the real port when tcp://...:0 or * was asked)."""
        if self._sock is None:
            return self.endpoint
        return self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _setup_curve(self, sock: zmq.Socket) -> None:
        import zmq.auth

        curve = self.settings.curve
        assert curve is not None
        key_file = self._resolve(curve.server_secret_key)
        try:
            public, secret = zmq.auth.load_certificate(key_file)
        except (OSError, ValueError) as err:
            raise ConfigError(f"publish.curve.server_secret_key: cannot load "
                              f"{key_file} ({err}); make one with "
                              f"`lepton-edge keys`") from err
        if secret is None:
            raise ConfigError(f"publish.curve.server_secret_key: {key_file} "
                              f"holds no secret key (that is the public half)")
        allowed = load_allowed_clients(self._resolve(curve.allowed_clients))
        for reason in allowed.skipped:
            log.warning("publish.curve.allowed_clients: skipping %s", reason)
        log.info("CURVE: %d allowed client key(s) from %s", len(allowed.keys), allowed.directory)
        self._denials = HandshakeDenials(allowed.directory)
        self._auth = start_authenticator(self._ctx, allowed, self._denials)
        self._monitor = sock.get_monitor_socket(_MONITORED)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def send(self, topic: str, payload: bytes) -> None:
        """Publish without ever blocking (the recording is sinks/recorder.py's)."""
        assert self._sock is not None, "publisher is not open"
        try:
            self._sock.send_multipart([topic.encode(), payload], flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.send_errors += 1

    def poll_subscriptions(self) -> int:
        """Drain XPUB's subscription messages; returns the current subscription count. Also
        counts refused CURVE handshakes and logs them (rate-limited)."""
        if self._sock is None:
            return self.subscriptions
        self._drain_monitor()
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

    def _drain_monitor(self, *, final: bool = False) -> None:
        if self._monitor is None or self._denials is None:
            return
        from zmq.utils.monitor import parse_monitor_message

        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            if event["event"] == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                self._denials.protocol_error(event["value"])
            elif event["event"] == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                self._denials.hung_up()
        line = self._denials.report(time.monotonic(), force=final)
        if line is not None:
            log.warning("%s", line)

    def wait_for_subscribers(self, count: int, timeout: float) -> bool:
        """Block until `count` subscriptions arrived (bench runs and demos), or timeout."""
        deadline = time.monotonic() + timeout
        while self.poll_subscriptions() < count:
            if time.monotonic() >= deadline or self._sock is None:
                return False
            self._sock.poll(50, zmq.POLLIN)
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._drain_monitor(final=True)  # the last refusals get their line, however recent
            self._close_auth(self._sock)
            self._sock.close()  # honours LINGER: queued messages get their second
            self._sock = None
            self._remove_ipc_file()

    def _close_auth(self, sock: zmq.Socket) -> None:
        if self._monitor is not None:
            sock.disable_monitor()
            self._monitor.close(0)
            self._monitor = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def _remove_ipc_file(self) -> None:
        """Unlink the socket file we bound (libzmq leaves it), unless it is no longer ours."""
        if self._ipc_file is None:
            return
        path, dev, ino = self._ipc_file
        self._ipc_file = None
        try:
            st = path.lstat()
            if (st.st_dev, st.st_ino) == (dev, ino):
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            log.warning("cannot remove the socket file %s (%s)", path, err.strerror)


def _ipc_file_path(endpoint: str) -> Path | None:
    """The socket file of an ipc:// endpoint; None for other transports, the abstract
    namespace (`ipc://@name`) and libzmq's generated name (`ipc://*`), which have none."""
    if not endpoint.startswith("ipc://"):
        return None
    name = endpoint[len("ipc://"):]
    return None if name.startswith("@") or name == "*" else Path(name)


def _claim_ipc_path(path: Path, endpoint: str) -> None:
    """Refuse a socket file another process listens on; remove a stale one (nothing answers:
    its daemon died). Probing by connecting is what tells the two apart; the file's existence
    does not. Raises ConfigError for a live socket and for a path that is not a socket."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"publish.endpoint: {path} exists and is not a socket; remove it or "
                          f"choose another ipc:// path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)  # a listener with a full backlog would otherwise block forever
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        log.info("removing the stale socket file %s (nothing listens on it)", path)
        path.unlink(missing_ok=True)
        return
    except TimeoutError:
        pass  # something listens, too busy to accept: in use all the same
    except OSError as err:
        raise ConfigError(f"publish.endpoint: cannot tell whether {endpoint} is in use "
                          f"({err.strerror or err}); stop the daemon that owns it, or remove "
                          f"{path} if none does") from err
    finally:
        probe.close()
    raise ConfigError(f"publish.endpoint: {endpoint} is in use: another daemon is listening on "
                      f"it; stop that one, or give this daemon another ipc:// path")


class HandshakeDenials:
    """Counts the subscribers a CURVE publisher refused, and words them for the log: the first
    refusal at once, then at most one line per `interval` seconds. Thread-safe: unknown keys
    are reported by the authenticator's thread, protocol errors by the publishing thread."""

    def __init__(self, allowed_dir: Path, interval: float = DENIAL_LOG_INTERVAL,
                 keys_shown: int = 3) -> None:
        self.allowed_dir = allowed_dir
        self.interval = interval
        self.keys_shown = keys_shown
        self.total = 0
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._keys: dict[str, str] = {}  # unknown client key -> the peer that offered it
        self._other_keys = 0  # refusals of keys past the first `keys_shown`
        self._next_report = 0.0

    def unknown_key(self, key: str, peer: str) -> None:
        with self._lock:
            self._add("with a client key not in allowed_clients")
            if key in self._keys or len(self._keys) < self.keys_shown:  # bounded under a flood
                self._keys.setdefault(key, peer or "a local socket")
            else:
                self._other_keys += 1

    def protocol_error(self, value: int) -> None:
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            reason = "without CURVE keys"
        elif value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
            reason = "with the wrong server public key"
        else:
            reason = f"with a protocol error (0x{value:x})"
        with self._lock:
            self._add(reason)

    def hung_up(self) -> None:
        with self._lock:
            self._add("that hung up during the handshake, likely without CURVE keys")

    def _add(self, reason: str) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        self.total += 1

    def report(self, now: float, *, force: bool = False) -> str | None:
        """The warning to log now, or None (nothing new, or the last line was too recent and
        not `force`: the last report, at close, is forced)."""
        with self._lock:
            if not self._counts or (now < self._next_report and not force):
                return None
            counts, keys, other = self._counts, self._keys, self._other_keys
            self._counts, self._keys, self._other_keys = {}, {}, 0
            self._next_report = now + self.interval
        n = sum(counts.values())
        parts = [f"{c} {reason}" for reason, c in sorted(counts.items(), key=lambda kv: -kv[1])]
        if keys:
            shown = [f"{k} from {peer}" for k, peer in keys.items()]
            more = f" and {other} more" if other else ""
            parts.append(f"unknown keys: {', '.join(shown)}{more}")
        return (f"CURVE: refused {n} subscriber handshake(s): {'; '.join(parts)}. A subscriber "
                f"needs the daemon's public key, and its own public .key file in "
                f"{self.allowed_dir} (next report in {self.interval:g} s at the earliest)")


def start_authenticator(context: zmq.Context, allowed: AllowedClients,
                        denials: HandshakeDenials) -> Any:
    """pyzmq's ZAP handler thread, started: it accepts exactly the keys in `allowed` and
    counts every other one in `denials`, with the peer's address."""
    from zmq.auth.thread import ThreadAuthenticator

    class Authenticator(ThreadAuthenticator):
        peer = ""

        async def handle_zap_message(self, msg: list[bytes]) -> None:
            self.peer = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
            await super().handle_zap_message(msg)

    class AllowedKeys:
        def callback(self, domain: str, key: bytes) -> bool:
            if key in allowed.keys:
                return True
            denials.unknown_key(key.decode("ascii", "replace"), auth.peer)
            return False

    auth = Authenticator(context, log=logging.getLogger("lepton_edge.auth"))
    try:
        auth.start()
    except zmq.ZMQError as err:  # one ZAP handler per context: a second publisher in it
        if auth.zap_socket is not None:
            auth.zap_socket.close(0)
        raise ConfigError(f"publish.curve: cannot start the authenticator ({err}); one CURVE "
                          f"publisher per process") from err
    auth.configure_curve_callback(domain="*", credentials_provider=AllowedKeys())
    return auth
