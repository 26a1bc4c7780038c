"""The ZeroMQ publisher: multipart `[topic, payload]` on an XPUB socket.

XPUB sends exactly like PUB (a subscriber past its high-water mark loses messages, inference
never waits), and also tells us who subscribed: health reports the count, and a bench run can
wait for its subscriber before sending frame 0. Losses are visible to readers through the
gap-free per-camera `seq`. One ZeroMQ context per process, passed in. The socket is used only
by the pipeline's publishing thread.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import IO, Any

import zmq

from .config import Publish
from .errors import ConfigError

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, context: zmq.Context, settings: Publish, *, endpoint: str | None = None,
                 record: Path | None = None) -> None:
        self.settings = settings
        self.endpoint = endpoint or settings.endpoint
        self._ctx = context
        self._sock: zmq.Socket | None = None
        self._record_path = record
        self._record: IO[bytes] | None = None
        self._auth: Any = None
        self.subscriptions = 0
        self.sent = 0
        self.send_errors = 0

    def open(self) -> None:
        sock = self._ctx.socket(zmq.XPUB)
        sock.setsockopt(zmq.SNDHWM, self.settings.hwm)
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscribe, so the count is right
        sock.setsockopt(zmq.LINGER, 1000)  # at exit, a second to flush the last messages
        if self.settings.curve is not None:
            try:
                self._setup_curve(sock)
            except BaseException:
                sock.close(0)  # an open socket would block Context.term() at teardown forever
                raise
        old_umask = None
        if self.endpoint.startswith("ipc://"):
            ipc_path = Path(self.endpoint[len("ipc://"):])
            ipc_path.parent.mkdir(parents=True, exist_ok=True)
            old_umask = os.umask(0o777 & ~self.settings.ipc_mode)  # born with the right mode
        try:
            sock.bind(self.endpoint)
        except zmq.ZMQError as err:
            sock.close(0)
            raise ConfigError(f"publish.endpoint: cannot bind {self.endpoint} ({err}); "
                              f"is another daemon using it?") from err
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        if self.endpoint.startswith("ipc://"):
            os.chmod(self.endpoint[len("ipc://"):], self.settings.ipc_mode)
        self._sock = sock
        if self._record_path is not None:
            self._record_path.parent.mkdir(parents=True, exist_ok=True)
            self._record = open(self._record_path, "wb")  # noqa: SIM115 (closed in close())
        log.info("publishing on %s (hwm %d)", self.bound_endpoint, self.settings.hwm)

    @property
    def bound_endpoint(self) -> str:
        """The endpoint actually bound (with the real port when tcp://...:0 or * was asked)."""
        if self._sock is None:
            return self.endpoint
        return self._sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _setup_curve(self, sock: zmq.Socket) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        curve = self.settings.curve
        assert curve is not None
        try:
            public, secret = zmq.auth.load_certificate(curve.server_secret_key)
        except (OSError, ValueError) as err:
            raise ConfigError(f"publish.curve.server_secret_key: cannot load "
                              f"{curve.server_secret_key} ({err}); make one with "
                              f"`lepton-edge keys`") from err
        if secret is None:
            raise ConfigError(f"publish.curve.server_secret_key: {curve.server_secret_key} "
                              f"holds no secret key (that is the public half)")
        if not Path(curve.allowed_clients).is_dir():
            raise ConfigError(f"publish.curve.allowed_clients: {curve.allowed_clients} is not a "
                              f"directory of client public keys")
        self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger("lepton_edge.auth"))
        self._auth.start()
        self._auth.configure_curve(domain="*", location=curve.allowed_clients)
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True

    def send(self, topic: str, payload: bytes) -> None:
        """Publish without ever blocking; also appends the payload to the recording."""
        assert self._sock is not None, "publisher is not open"
        try:
            self._sock.send_multipart([topic.encode(), payload], flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            self.send_errors += 1
        if self._record is not None:
            self._record.write(payload + b"\n")

    def poll_subscriptions(self) -> int:
        """Drain XPUB's subscription messages; returns the current subscription count."""
        if self._sock is None:
            return self.subscriptions
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return self.subscriptions
            if msg[:1] == b"\x01":
                self.subscriptions += 1
            elif msg[:1] == b"\x00":
                self.subscriptions = max(0, self.subscriptions - 1)

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
            self._sock.close()  # honours LINGER: queued messages get their second
            self._sock = None
        if self._record is not None:
            self._record.close()
            self._record = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
