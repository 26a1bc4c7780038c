"""The systemd side of sd_notify for tests: a real AF_UNIX datagram socket bound where
`$NOTIFY_SOCKET` will point (a file-system path, or an abstract `@name`), and a thread that
timestamps every datagram with the monotonic clock as it arrives."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# sockaddr_un.sun_path holds 108 bytes; pytest's tmp_path can be longer than that.
_SUN_PATH_MAX = 107


@dataclass(frozen=True)
class Notification:
    t: float  # time.monotonic() at arrival
    fields: dict[str, str]

    def __contains__(self, key: str) -> bool:
        return key in self.fields


class NotifyListener:
    """`with NotifyListener(tmp_path, abstract=False) as rx:` then pass `rx.env` to the daemon.

    `rx.messages` is every datagram received so far, in order, parsed into KEY=value fields.
    """

    def __init__(self, directory: Path, *, abstract: bool = False) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.path: Path | None = None
        if abstract:
            name = f"lepton-edge-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self._sock.bind(b"\0" + name.encode())
            self.value = "@" + name
        else:
            path = directory / "notify.sock"
            if len(os.fsencode(path)) > _SUN_PATH_MAX:
                path = Path(tempfile.mkdtemp(prefix="le-")) / "notify.sock"
            self._sock.bind(str(path))
            self.path = path
            self.value = str(path)
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._messages: list[Notification] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-rx", daemon=True)
        self._thread.start()

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        """Environment for the daemon. WATCHDOG_PID is left out on purpose: the daemon's pid
        is not known before it starts, and the notifier ignores a WATCHDOG_PID of another
        process (the variables were inherited)."""
        env = {"NOTIFY_SOCKET": self.value}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            t = time.monotonic()
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self._messages.append(Notification(t, fields))

    @property
    def messages(self) -> list[Notification]:
        with self._lock:
            return list(self._messages)

    def times(self, key: str, since: float = 0.0) -> list[float]:
        """Arrival times of the messages carrying `key`, from `since` on."""
        return [m.t for m in self.messages if key in m and m.t >= since]

    def wait_for(self, key: str, timeout: float, since: float = 0.0,
                 value: str | None = None) -> Notification | None:
        """The first message carrying `key` (with `value`, if given) from `since` on."""
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if m.t >= since and key in m and (value is None or m.fields[key] == value):
                    return m
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(1.0)
        self._sock.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
