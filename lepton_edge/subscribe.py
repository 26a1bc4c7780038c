"""The client library: subscribe to a daemon and get typed messages.

    with Subscriber("tcp://camera-box:5556", cameras=["gate-1"]) as sub:
        for msg in sub.messages(timeout=5):
            ...  # DetectionMessage or HealthMessage

Malformed messages are skipped with a warning (counted in `invalid`), never raised into the
reader's loop; gaps in a camera's `seq` are counted in `missed`.

`cameras` filters exactly: ZeroMQ subscriptions match topic prefixes, so `det.gate-1` alone
would also deliver `det.gate-10` and `det.gate-1.backup`; those are dropped here (counted in
`filtered`). A subscriber that has received nothing at all `silence_warning` seconds after it
connected logs why that usually happens (a wrong endpoint, or CURVE keys the daemon refuses:
a refused client gets no error, only silence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import zmq

from lepton_edge.errors import MessageError
from lepton_edge.messages import (
    DET_PREFIX,
    EVENT_PREFIX,
    HEALTH_TOPIC,
    VERDICT_PREFIX,
    DetectionMessage,
    Message,
    decode,
)

log = logging.getLogger(__name__)


SILENCE_WARNING = 10.0  # seconds: the daemon sends health every second by default


class Subscriber:
    def __init__(self, endpoint: str, cameras: Sequence[str] | None = None, *,
                 health: bool = True, outcomes: bool = True, hwm: int = 1000,
                 context: zmq.Context | None = None,
                 curve_server_public: bytes | None = None,
                 curve_client_keys: tuple[bytes, bytes] | None = None,
                 silence_warning: float | None = SILENCE_WARNING) -> None:
        if cameras is not None and any(not c for c in cameras):
            raise ValueError("cameras: an empty camera id would match every camera")
        if curve_server_public is not None and curve_client_keys is None:
            raise ValueError("CURVE needs the client's own keypair too")
        self.endpoint = endpoint
        self._curve = curve_server_public is not None
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        if curve_server_public is not None and curve_client_keys is not None:
            self._sock.curve_serverkey = curve_server_public
            self._sock.curve_publickey, self._sock.curve_secretkey = curve_client_keys
        prefixes = [DET_PREFIX] + ([EVENT_PREFIX, VERDICT_PREFIX] if outcomes else [])
        topics = ([p + c for p in prefixes for c in cameras] if cameras else list(prefixes))
        if health:
            topics.append(HEALTH_TOPIC)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        # What ZeroMQ's prefix match lets through beyond these is dropped in receive().
        self._exact = frozenset(t.encode() for t in topics if t not in prefixes)
        self._all_cameras = not cameras
        self._prefixes = tuple(p.encode() for p in prefixes)
        self._sock.connect(endpoint)
        self._last_seq: dict[str, int] = {}
        self.missed: dict[str, int] = {}
        self.invalid = 0
        self.filtered = 0
        self.received = 0
        self._connected_at = time.monotonic()
        self._silence_at = (None if silence_warning is None
                            else self._connected_at + silence_warning)

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next valid message, or None after `timeout` seconds without one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self._poll(deadline):
                return None
            parts = self._sock.recv_multipart()
            if not self._wanted(parts[0]):
                self.filtered += 1
                continue
            try:
                if len(parts) != 2:
                    raise MessageError(f"expected 2 frames [topic, payload], got {len(parts)}")
                msg = decode(parts[0], parts[1])
            except MessageError as err:
                self.invalid += 1
                log.warning("skipping a malformed message: %s", err)
                continue
            self.received += 1
            if isinstance(msg, DetectionMessage):
                self._count_gap(msg)
            return msg

    def _poll(self, deadline: float | None) -> bool:
        """Wait for a message until `deadline` (forever when None); on the way, warn once when
        nothing at all has arrived `silence_warning` seconds after connecting."""
        while True:
            now = time.monotonic()
            until = deadline
            if self._silence_at is not None and (until is None or self._silence_at < until):
                until = self._silence_at
            wait = -1 if until is None else max(0, int((until - now) * 1000 + 0.999))
            if self._sock.poll(wait, zmq.POLLIN):
                return True
            if self._silence_at is not None and time.monotonic() >= self._silence_at:
                self._silence_at = None
                if self.heard_nothing:
                    log.warning("%s", self.silence_hint())
            if deadline is not None and time.monotonic() >= deadline:
                return False

    @property
    def heard_nothing(self) -> bool:
        """True while not one message (valid, malformed or filtered out) has arrived."""
        return self.received == 0 and self.filtered == 0 and self.invalid == 0

    def silence_hint(self) -> str:
        """Why a subscriber may have received nothing so far, for a person to act on."""
        waited = time.monotonic() - self._connected_at
        keys = ("check that the daemon's public key is the one this client uses and that this "
                "client's public .key file is in the daemon's publish.curve.allowed_clients"
                if self._curve else
                "if the daemon uses CURVE (publish.curve), this client needs its keys "
                "(lepton-edge subscribe --curve-server-key and --curve-client-key)")
        return (f"nothing received from {self.endpoint} in {waited:.0f} s (a daemon sends "
                f"health every second by default): check the endpoint and that the daemon "
                f"runs; {keys} (a refused client is not told; the daemon logs the refusal)")

    def _wanted(self, topic: bytes) -> bool:
        return topic in self._exact or (self._all_cameras and topic.startswith(self._prefixes))

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
