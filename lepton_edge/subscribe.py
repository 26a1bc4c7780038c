"""The client library: subscribe to a daemon and get typed messages.

    with Subscriber("tcp://camera-box:5556", cameras=["gate-1"]) as sub:
        for msg in sub.messages(timeout=5):
            ...  # DetectionMessage or HealthMessage

Malformed messages are skipped with a warning (counted in `invalid`), never raised into the
reader's loop; gaps in a camera's `seq` are counted in `missed`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import zmq

from .errors import MessageError
from .messages import DET_PREFIX, HEALTH_TOPIC, DetectionMessage, Message, decode

log = logging.getLogger(__name__)


class Subscriber:
    def __init__(self, endpoint: str, cameras: Sequence[str] | None = None, *,
                 health: bool = True, hwm: int = 1000, context: zmq.Context | None = None,
                 curve_server_public: bytes | None = None,
                 curve_client_keys: tuple[bytes, bytes] | None = None) -> None:
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve_server_public is not None:
            if curve_client_keys is None:
                raise ValueError("CURVE needs the client's own keypair too")
            self._sock.curve_serverkey = curve_server_public
            self._sock.curve_publickey, self._sock.curve_secretkey = curve_client_keys
        topics = [DET_PREFIX + c for c in cameras] if cameras else [DET_PREFIX]
        if health:
            topics.append(HEALTH_TOPIC)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        self._sock.connect(endpoint)
        self._last_seq: dict[str, int] = {}
        self.missed: dict[str, int] = {}
        self.invalid = 0

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next valid message, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait, zmq.POLLIN):
                return None
            parts = self._sock.recv_multipart()
            try:
                if len(parts) != 2:
                    raise MessageError(f"expected 2 frames [topic, payload], got {len(parts)}")
                msg = decode(parts[0], parts[1])
            except MessageError as err:
                self.invalid += 1
                log.warning("skipping a malformed message: %s", err)
                continue
            if isinstance(msg, DetectionMessage):
                self._count_gap(msg)
            return msg

    def messages(self, timeout: float | None = None) -> Iterator[Message]:
        """Messages until `timeout` seconds pass without one (forever when None)."""
        while (msg := self.receive(timeout)) is not None:
            yield msg

    def _count_gap(self, msg: DetectionMessage) -> None:
        last = self._last_seq.get(msg.camera)
        if last is not None and msg.seq > last + 1:
            self.missed[msg.camera] = self.missed.get(msg.camera, 0) + msg.seq - last - 1
        self._last_seq[msg.camera] = msg.seq

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_client_keys(secret_file: Path) -> tuple[bytes, bytes]:
    """(public, secret) of a client keypair written by `lepton-edge keys`."""
    import zmq.auth

    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ValueError(f"{secret_file}: no secret key in this file")
    return public, secret
