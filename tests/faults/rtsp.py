"""Drive ``rtsp_server.py`` (a real GStreamer RTSP server) from tests.

The server runs under the Debian interpreter, which has ``gi``; this module runs in the
project's virtual environment and uses only the standard library.

    ok, reason = rtsp_available()
    with RtspServer(Path("samples/vtest.avi")) as server:
        cap = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG, [...])
        server.stall()    # session alive, no RTP
        server.resume()
        server.kill()     # SIGKILL, like a camera losing power
        server.restart()  # same port, same URL
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
SYSTEM_PYTHONS = ("/usr/bin/python3",)
PYTHON_ENV = "LEPTON_RTSP_PYTHON"  # overrides SYSTEM_PYTHONS
INSTALL_HINT = "run scripts/install-system-deps.sh (as root)"
# For OPENCV_FFMPEG_CAPTURE_OPTIONS. Setting the variable at all drops OpenCV's TCP-first
# default, so TCP is explicit; the small probesize gives a first frame in ~0.1 s, not ~3 s.
CAPTURE_OPTIONS = "rtsp_transport;tcp|probesize;32768"
ACK_TIMEOUT_S = 5.0  # for the server's answer to stall()/resume()

_PROBE = """
import sys
try:
    import gi
except ImportError:
    sys.exit("no gi (python3-gi)")
try:
    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import Gst, GstRtspServer  # noqa: F401
except (ImportError, ValueError) as err:
    sys.exit(f"no GStreamer RTSP server typelib (gir1.2-gst-rtsp-server-1.0): {err}")
Gst.init(None)
packages = {
    "decodebin": "gstreamer1.0-plugins-base", "videoconvert": "gstreamer1.0-plugins-base",
    "intervideosrc": "gstreamer1.0-plugins-bad", "intervideosink": "gstreamer1.0-plugins-bad",
    "valve": "gstreamer1.0-plugins-base", "x264enc": "gstreamer1.0-plugins-ugly",
    "rtph264pay": "gstreamer1.0-plugins-good",
}
missing = [f"{e} ({p})" for e, p in packages.items() if Gst.ElementFactory.find(e) is None]
if missing:
    sys.exit("missing GStreamer elements: " + ", ".join(missing))
"""


class RtspServerError(RuntimeError):
    """The RTSP test server could not be started or controlled."""


def find_system_python() -> str | None:
    """Return the interpreter to run the server with (``$LEPTON_RTSP_PYTHON`` or Debian's)."""
    override = os.environ.get(PYTHON_ENV)
    for candidate in (override,) if override else SYSTEM_PYTHONS:
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _system_env() -> dict[str, str]:
    """This environment without the venv's variables, which must not reach Debian's python."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
    return {key: value for key, value in os.environ.items() if key not in drop}


@functools.cache
def rtsp_available() -> tuple[bool, str]:
    """Say whether the RTSP server can run here, and if not, why (for ``pytest.skip``)."""
    python = find_system_python()
    if python is None:
        where = os.environ.get(PYTHON_ENV) or " or ".join(SYSTEM_PYTHONS)
        return False, f"no system python3 at {where}; {INSTALL_HINT}"
    try:
        probe = subprocess.run(
            [python, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=_system_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"cannot probe {python} for GStreamer: {err}"
    if probe.returncode != 0:
        detail = probe.stderr.strip().splitlines()[-1:] or [f"exit {probe.returncode}"]
        return False, f"{python}: {detail[0]}; {INSTALL_HINT}"
    return True, ""


class RtspServer:
    """A ``rtsp_server.py`` subprocess serving one file at ``rtsp://127.0.0.1:PORT/MOUNT``.

    ``port=0`` picks a free port on the first start; ``restart()`` reuses it.
    """

    def __init__(
        self,
        file: Path,
        *,
        port: int = 0,
        mount: str = "/stream",
        fps: int = 10,
        startup_timeout: float = 10.0,
    ) -> None:
        self.file = Path(file)
        self.port = port
        self.mount = mount
        self.fps = fps
        self.startup_timeout = startup_timeout
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the server, wait for its URL line, and return the URL."""
        if self.running:
            raise RtspServerError(f"already running at {self.url}")
        python = find_system_python()
        if python is None:
            raise RtspServerError(f"no system python3; {INSTALL_HINT}")
        command = [
            python,
            str(SERVER_SCRIPT),
            "--file",
            str(self.file),
            "--port",
            str(self.port),
            "--mount",
            self.mount,
            "--fps",
            str(self.fps),
            "--exit-with-stdin",
        ]
        # stderr goes to a file, not a pipe: nobody reads it while the server runs, and a
        # full pipe would block the server.
        self._close_log()
        self._stderr = tempfile.TemporaryFile("w+", prefix="rtsp-server-")  # noqa: SIM115
        self._proc = subprocess.Popen(
            command,
            # The server exits when this pipe closes: no orphan if the test run is killed.
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=_system_env(),
        )
        line = self._read_line(self.startup_timeout)
        if not line.startswith("rtsp://"):
            exited = self._proc.poll()
            self.kill()
            what = (
                f"exited with {exited}"
                if exited is not None
                else (f"did not report its URL within {self.startup_timeout:.0f} s")
            )
            raise RtspServerError(
                f"RTSP server {what} (stdout {line!r}); command: {' '.join(command)};"
                f" stderr:\n{self.stderr() or '(empty)'}"
            )
        self.url = line
        self.port = int(line.split(":")[2].split("/")[0])
        return self.url

    def _read_line(self, timeout: float) -> str:
        """The server's next stdout line, or "" on timeout or EOF."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if selector.select(left):
                    # The server writes the whole line and flushes, so readline won't block.
                    return self._proc.stdout.readline().strip()
        return ""

    def stderr(self) -> str:
        """What the last server process wrote to stderr (for failure messages)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().strip()

    def _signal(self, signum: signal.Signals, ack: str) -> None:
        """Send ``signum`` and wait until the server prints ``ack`` (it has applied it)."""
        if not self.running:
            raise RtspServerError(f"server is not running (cannot send {signum.name})")
        assert self._proc is not None
        self._proc.send_signal(signum)
        line = self._read_line(ACK_TIMEOUT_S)
        if line != ack:
            raise RtspServerError(
                f"expected {ack!r} from the server after {signum.name}, got {line!r};"
                f" stderr:\n{self.stderr() or '(empty)'}"
            )

    def stall(self) -> None:
        """Stop sending RTP, keeping the server and sessions alive (SIGUSR1). Returns once
        applied; connections opened while stalled fail at their open timeout."""
        self._signal(signal.SIGUSR1, "stalled")

    def resume(self) -> None:
        """Send RTP again after ``stall()`` (SIGUSR2). Returns once applied."""
        self._signal(signal.SIGUSR2, "resumed")

    def kill(self) -> None:
        """SIGKILL the server, like a camera that lost power; connections drop at once."""
        if self._proc is None:
            return
        self._proc.kill()
        self._reap(timeout=5)

    def restart(self) -> str:
        """Kill the server if it runs, then start it again on the same port."""
        self.kill()
        return self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server and wait; SIGKILL it if it does not exit. Safe twice."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._reap(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _reap(self, timeout: float) -> None:
        assert self._proc is not None
        self._proc.wait(timeout)
        for pipe in (self._proc.stdin, self._proc.stdout):
            if pipe is not None:
                pipe.close()
        self._proc = None

    def _close_log(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = [
    "CAPTURE_OPTIONS",
    "RtspServer",
    "RtspServerError",
    "find_system_python",
    "rtsp_available",
]
