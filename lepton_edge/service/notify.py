"""The systemd notify protocol (``sd_notify``), written with the standard library only.

systemd passes a datagram socket to a ``Type=notify`` service in ``$NOTIFY_SOCKET``: either a
file-system path (``/run/systemd/notify``) or an abstract socket name written with a leading
``@``. The service sends newline-separated ``KEY=value`` assignments to it, one datagram per
message (see ``sd_notify(3)``). ``READY=1`` ends the start-up phase, ``WATCHDOG=1`` feeds the
watchdog (``WatchdogSec=``), ``STATUS=`` is the line ``systemctl status`` shows, and
``RELOADING=1``/``STOPPING=1`` report state changes.

Two rules shape this module:

* Without ``$NOTIFY_SOCKET`` (started from a shell, in tests) every method is a no-op.
* A failed send never raises. The notify socket belongs to PID 1 and can vanish (systemd
  re-executed, the unit being torn down); the daemon must keep processing frames. The first
  failure in a row is logged as a warning with its errno; repeats are logged at debug level
  until a send succeeds again, so a ping every few seconds cannot flood the journal.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType

__all__ = ["SystemdNotifier"]

logger = logging.getLogger(__name__)

# Field names in the protocol are upper-case identifiers (READY, STATUS, MONOTONIC_USEC, ...).
_KEY_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _socket_address(value: str) -> str | bytes | None:
    """Turn ``$NOTIFY_SOCKET`` into an ``AF_UNIX`` address, or None when unsupported.

    ``@name`` is an abstract socket: the address is ``b"\\0name"``. A path must be absolute.
    Other forms (``vsock:CID:PORT``, accepted by systemd >= 254 for VMs) are not supported.
    """
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None


class SystemdNotifier:
    """Sends ``sd_notify`` messages to ``$NOTIFY_SOCKET``; a no-op when it is unset.

    Building one does no I/O: the environment is read here, the socket is opened on the first
    send. All methods are safe to call from several threads (the inference loop feeds the
    watchdog while the main thread reports status and state changes).

    Args:
        environ: the environment to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
            ``WATCHDOG_PID`` from; ``os.environ`` when None.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket_name = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(self._socket_name) if self._socket_name else None
        self._watchdog_usec = env.get("WATCHDOG_USEC")
        self._watchdog_pid = env.get("WATCHDOG_PID")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False
        self._closed = False
        if self._socket_name and self._address is None:
            logger.warning(
                "NOTIFY_SOCKET=%r is neither a path nor an abstract '@' name; "
                "systemd notifications are disabled",
                self._socket_name,
            )

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1`` pings: half of ``WatchdogSec=``.

        Returns None when the watchdog is off: ``$WATCHDOG_USEC`` unset, not a positive
        integer, or ``$WATCHDOG_PID`` set to another process (the variables were inherited
        from a parent, and systemd would ignore our pings).
        """
        if not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                pid = int(self._watchdog_pid)
            except ValueError:
                return None
            if pid != os.getpid():
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2_000_000

    def ready(self) -> None:
        """``READY=1``: start-up is finished (sent after the first inference)."""
        self.notify(READY=1)

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the pipeline made progress; resets the ``WatchdogSec=`` timer."""
        self.notify(WATCHDOG=1)

    def status(self, text: str) -> None:
        """``STATUS=text``: one line for ``systemctl status`` (line breaks become spaces)."""
        self.notify(STATUS=" ".join(text.splitlines()))

    def stopping(self) -> None:
        """``STOPPING=1``: shutdown has begun (sent on SIGTERM, before draining)."""
        self.notify(STOPPING=1)

    def reloading(self) -> None:
        """``RELOADING=1`` with ``MONOTONIC_USEC``: a reload (SIGHUP) has begun.

        systemd >= 253 ``Type=notify-reload`` requires ``MONOTONIC_USEC`` (CLOCK_MONOTONIC
        in microseconds) next to ``RELOADING=1``; older versions ignore the extra field.
        Send :meth:`ready` when the reload is done.
        """
        self.notify(RELOADING=1, MONOTONIC_USEC=time.monotonic_ns() // 1000)

    def extend_timeout(self, seconds: float) -> None:
        """``EXTEND_TIMEOUT_USEC``: ask for ``seconds`` more before the start/stop timeout.

        Useful while a TensorRT engine is being built on first start.
        """
        self.notify(EXTEND_TIMEOUT_USEC=max(0, int(seconds * 1_000_000)))

    def notify(self, **fields: str | int) -> None:
        """Send one message made of ``KEY=value`` lines, in the order given.

        Example: ``notify(READY=1, STATUS="12.5 fps")`` sends ``b"READY=1\\nSTATUS=12.5 fps"``.

        Raises:
            ValueError: a key is not an upper-case protocol name or a value contains a line
                break (programming errors; send failures never raise).
        """
        lines = []
        for key, value in fields.items():
            if not _KEY_RE.match(key):
                raise ValueError(f"notify field name must match {_KEY_RE.pattern}, got {key!r}")
            text = str(int(value)) if isinstance(value, bool) else str(value)
            if "\n" in text:
                raise ValueError(f"notify field {key} must be one line, got {text!r}")
            lines.append(f"{key}={text}")
        if not lines or self._address is None:
            return
        self._send("\n".join(lines).encode())

    def close(self) -> None:
        """Close the socket; later messages are dropped. Safe to call twice."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, payload: bytes) -> None:
        assert self._address is not None  # checked by the caller
        with self._lock:
            if self._closed:
                return
            try:
                if self._sock is None:
                    # Python sockets are close-on-exec already (PEP 446).
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # MSG_DONTWAIT: a full receive queue must not stall the inference thread;
                # the send fails with EAGAIN instead, and the next ping follows shortly.
                self._sock.sendto(payload, socket.MSG_DONTWAIT, self._address)
            except OSError as err:
                self._report_failure(err)
            else:
                if self._failing:
                    logger.info("systemd notify socket %s reachable again", self._socket_name)
                self._failing = False

    def _report_failure(self, err: OSError) -> None:
        code = errno.errorcode.get(err.errno, str(err.errno)) if err.errno else "?"
        if self._failing:
            logger.debug("sd_notify to %s failed again (%s)", self._socket_name, code)
            return
        self._failing = True
        logger.warning(
            "sd_notify to %s failed (%s: %s); continuing without systemd notifications "
            "until the socket is back",
            self._socket_name,
            code,
            err.strerror or err,
        )
