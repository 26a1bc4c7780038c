"""ipc:// endpoints carry file permissions: only the service's user and group may connect.

Pass criterion: the socket file has `publish.ipc_mode` (default 0660) from the moment it
exists; a subscriber in the group receives detections; a user outside the group is refused by
the kernel (EACCES on connect), and the same user can connect when the mode is 0666 (so the
refusal is the mode's doing, not the path's). The other-user checks need root (setpriv).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lepton_edge.messages import DetectionMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import VTEST, write_config

NOBODY = 65534
# Runs as another user: connect to the unix socket and say what the kernel answered.
PROBE = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
    print("connected")
except PermissionError:
    print("denied")
except OSError as err:
    print(f"error {err}")
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's tmp_path is 0700: it would deny everyone
    for the wrong reason)."""
    path = Path(tempfile.mkdtemp(prefix="lepton-ipc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def probe_as(uid: int, groups: list[int], socket_path: Path) -> str:
    setpriv = shutil.which("setpriv")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or setpriv is None or python is None:
        pytest.skip("checking another user's access needs root, setpriv and /usr/bin/python3")
    group_args = ["--groups", ",".join(map(str, groups))] if groups else ["--clear-groups"]
    result = subprocess.run(
        [setpriv, f"--reuid={uid}", f"--regid={NOBODY}", *group_args, python, "-c", PROBE,
         str(socket_path)], capture_output=True, text=True, timeout=30, check=False)
    return result.stdout.strip() or result.stderr.strip()


def start_ipc_daemon(tmp_path: Path, shared_dir: Path, start_daemon, **publish: object):
    sock = shared_dir / "run" / "lepton.sock"
    cfg = write_config(
        tmp_path / "c.yaml", input_size=320,
        publish={"endpoint": f"ipc://{sock}", "health_interval": 0.5, **publish},
        cameras=[{"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}])
    daemon = start_daemon(cfg)
    assert daemon.wait_for_log("publishing on", timeout=60), daemon.stderr()
    return daemon, sock


def test_default_mode_0660_group_reads_others_refused(tmp_path: Path, shared_dir: Path,
                                                      start_daemon) -> None:
    daemon, sock = start_ipc_daemon(tmp_path, shared_dir, start_daemon)
    st = sock.stat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_gid == os.getegid()  # the service's group
    with Subscriber(daemon.endpoint) as sub:
        msg = next((m for m in sub.messages(timeout=60) if isinstance(m, DetectionMessage)),
                   None)
    assert msg is not None and msg.camera == "plaza", daemon.stderr()
    assert probe_as(NOBODY, [], sock) == "denied"
    assert probe_as(NOBODY, [st.st_gid], sock) == "connected"  # a member of the group
    assert daemon.stop() == 0, daemon.stderr()


def test_configured_mode_is_applied(tmp_path: Path, shared_dir: Path, start_daemon) -> None:
    daemon, sock = start_ipc_daemon(tmp_path, shared_dir, start_daemon, ipc_mode=0o666)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o666
    assert probe_as(NOBODY, [], sock) == "connected"  # the control: same user, open mode
    assert daemon.stop() == 0, daemon.stderr()
