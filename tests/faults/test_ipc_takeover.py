"""Two daemons, one ipc:// endpoint: the second must not take the socket over.

libzmq's ipc bind unlinks whatever file is at the path and binds a new socket there, so a
second daemon started by mistake (a copied unit, a test run next to the service) used to win:
the first kept running, publishing to a socket nobody could reach any more. Pass criterion: the
second daemon exits 2 with one line naming the endpoint; the first stays reachable (a new
subscriber receives its detections); after the first's clean exit the socket file is gone; a
stale file left by a killed daemon does not stop the next start.
"""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_edge.messages import DetectionMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import VTEST, write_config


@pytest.fixture
def sock_path() -> Iterator[Path]:
    """A short path (unix socket paths are limited to 107 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="lep-ipc-"))
    yield directory / "run" / "lepton.sock"
    shutil.rmtree(directory, ignore_errors=True)


def ipc_config(path: Path, sock: Path, **camera: object) -> Path:
    cam = {"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True, **camera}
    return write_config(path, input_size=320,
                        publish={"endpoint": f"ipc://{sock}", "health_interval": 0.5},
                        cameras=[cam])


def first_detection(endpoint: str) -> DetectionMessage | None:
    with Subscriber(endpoint) as sub:
        return next((m for m in sub.messages(timeout=30) if isinstance(m, DetectionMessage)),
                    None)


def test_second_daemon_on_a_live_ipc_socket_is_refused_first_stays_reachable(
        tmp_path: Path, sock_path: Path, start_daemon) -> None:
    first = start_daemon(ipc_config(tmp_path / "first.yaml", sock_path))
    assert first.wait_for_log("publishing on", timeout=90), first.stderr()
    assert first_detection(first.endpoint) is not None, first.stderr()
    # The same endpoint, a camera that would end on its own: were it allowed to bind, it
    # would exit 0 after 40 frames instead of 2 at once.
    second = start_daemon(ipc_config(tmp_path / "second.yaml", sock_path, mode="bench",
                                     loop=False, max_frames=40))
    assert second.wait(timeout=120) == 2, second.stderr()
    errors = [ln for ln in second.stderr().splitlines() if "error" in ln.lower()]
    line = next(i for i, t in enumerate((tmp_path / "second.yaml").read_text().splitlines(), 1)
                if "endpoint" in t)
    assert errors == [f"lepton-edge: error: {tmp_path / 'second.yaml'}:{line}: "
                      f"publish.endpoint: ipc://{sock_path} is in use: "
                      f"another daemon is listening on it; stop that one, or give this daemon "
                      f"another ipc:// path"], second.stderr()
    assert "Traceback" not in second.stderr()
    assert first.proc.poll() is None
    msg = first_detection(first.endpoint)  # a new subscriber still reaches the first daemon
    assert msg is not None and msg.camera == "plaza", first.stderr()
    assert first.stop() == 0, first.stderr()
    assert not sock_path.exists(), "the socket file outlived the daemon's clean exit"


def test_stale_socket_of_a_killed_daemon_does_not_block_the_next(
        tmp_path: Path, sock_path: Path, start_daemon) -> None:
    sock_path.parent.mkdir(parents=True)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock_path))  # what SIGKILL leaves behind: the file, nobody listening
    dead.close()
    daemon = start_daemon(ipc_config(tmp_path / "c.yaml", sock_path))
    assert daemon.wait_for_log("publishing on", timeout=90), daemon.stderr()
    assert f"removing the stale socket file {sock_path}" in daemon.stderr()
    assert first_detection(daemon.endpoint) is not None, daemon.stderr()
    assert daemon.stop(signal.SIGINT) == 0, daemon.stderr()
    assert not sock_path.exists()
