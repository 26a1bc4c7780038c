"""Strangers on the network: ZeroMQ CURVE with keys from `lepton-edge keys`.

Pass criterion: a subscriber whose public key is in `publish.curve.allowed_clients` receives
detections, even with a broken key file next to its own (skipped with a warning naming it);
one without CURVE, and one with a keypair the daemon does not know, receive nothing while the
allowed one is being served, and the daemon logs both refusals. Keys: the secret half is 0600,
and nothing is overwritten without --force.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from lepton_edge.errors import ConfigError
from lepton_edge.keys import create_keypair, main_keys
from lepton_edge.messages import DetectionMessage
from lepton_edge.subscribe import Subscriber, load_client_keys
from tests.conftest import VTEST, run_cli, write_config

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


def make_keys(directory: Path, name: str) -> tuple[Path, Path]:
    result = run_cli("keys", "--dir", str(directory), "--name", name, timeout=60)
    assert result.returncode == 0, result.stderr
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def test_keys_command_writes_a_public_and_a_0600_secret_file(tmp_path: Path) -> None:
    result = run_cli("keys", "--dir", str(tmp_path / "k"), "--name", "server", timeout=60)
    assert result.returncode == 0, result.stderr
    public, secret = tmp_path / "k" / "server.key", tmp_path / "k" / "server.key_secret"
    assert f"public key: {public}" in result.stdout
    assert f"secret key: {secret}" in result.stdout
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub_key, no_secret = zmq.auth.load_certificate(str(public))
    assert no_secret is None and len(pub_key) == 40  # Z85 of 32 bytes
    same_pub, sec_key = zmq.auth.load_certificate(str(secret))
    assert same_pub == pub_key and sec_key is not None and len(sec_key) == 40


def test_keys_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    _, secret = make_keys(tmp_path, "server")
    before = secret.read_bytes()
    again = run_cli("keys", "--dir", str(tmp_path), "--name", "server", timeout=60)
    assert again.returncode == 2
    errors = [ln for ln in again.stderr.splitlines() if ln.startswith("lepton-edge: error:")]
    assert len(errors) == 1 and "already exists" in errors[0] and "--force" in errors[0]
    assert secret.read_bytes() == before
    # --force (flag to be added to cli.py; main_keys reads args.force) makes a new keypair.
    main_keys(argparse.Namespace(dir=str(tmp_path), name="server", force=True))
    assert secret.read_bytes() != before
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["../escape", "", "a/b", ".hidden"])
def test_keys_refuses_names_that_are_not_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="--name"):
        create_keypair(tmp_path, name)


def test_only_allowed_clients_receive(tmp_path: Path, start_daemon) -> None:
    # the key paths in the config are relative to the config file (in etc/), not to the
    # daemon's working directory (tmp_path)
    etc = tmp_path / "etc"
    keys = etc / "keys"
    allowed_dir = keys / "clients"
    allowed_dir.mkdir(parents=True)
    server_public, server_secret = make_keys(keys, "server")
    client_public, client_secret = make_keys(keys, "control-room")
    _, stranger_secret = make_keys(tmp_path / "elsewhere", "stranger")
    shutil.copy(client_public, allowed_dir)
    (allowed_dir / "camera-17.key").write_text("truncated in the copy\n")  # one bad file
    cfg = write_config(
        etc / "c.yaml", input_size=320,
        cameras=[{"id": "plaza", "url": str(VTEST), "mode": "replay", "loop": True}])
    text = cfg.read_text().replace(
        "health_interval: 0.5",
        f"health_interval: 0.5\n  curve:\n"
        f"    server_secret_key: {server_secret.relative_to(etc)}\n"
        f"    allowed_clients: {allowed_dir.relative_to(etc)}")
    cfg.write_text(text)
    daemon = start_daemon(cfg)
    server_key, _ = zmq.auth.load_certificate(str(server_public))
    ctx = zmq.Context()
    try:
        allowed = Subscriber(daemon.endpoint, context=ctx, curve_server_public=server_key,
                             curve_client_keys=load_client_keys(client_secret))
        plain = Subscriber(daemon.endpoint, context=ctx)
        stranger = Subscriber(daemon.endpoint, context=ctx, curve_server_public=server_key,
                              curve_client_keys=load_client_keys(stranger_secret))
        with allowed, plain, stranger:
            got = []
            deadline = time.monotonic() + 60
            while len(got) < 5 and time.monotonic() < deadline:
                msg = allowed.receive(timeout=1)
                if isinstance(msg, DetectionMessage):
                    got.append(msg)
            assert len(got) == 5, daemon.stderr()
            t_served = time.monotonic()
            assert plain.receive(timeout=2) is None, "a subscriber without CURVE got a message"
            assert stranger.receive(timeout=0.5) is None, "an unknown client key got a message"
            print(f"\nCURVE: allowed client got 5 detections; plain and stranger got nothing in "
                  f"{time.monotonic() - t_served:.1f} s of service")
    finally:
        ctx.term()
    assert daemon.stop() == 0, daemon.stderr()
    log = daemon.stderr()
    assert f"skipping {allowed_dir / 'camera-17.key'}: no public-key line" in log, log
    refusals = [ln for ln in log.splitlines() if "CURVE: refused" in ln]
    assert refusals and len(refusals) <= 2, log  # rate-limited: the first, then one at exit
    text = " ".join(refusals)
    stranger_key = zmq.auth.load_certificate(str(stranger_secret))[0].decode()
    assert "without CURVE keys" in text and f"{stranger_key} from 127.0.0.1" in text, text


def test_bad_curve_key_file_is_one_clear_error(tmp_path: Path) -> None:
    public, _ = make_keys(tmp_path, "server")
    cfg = write_config(tmp_path / "c.yaml")
    cfg.write_text(cfg.read_text().replace(
        "health_interval: 0.5",
        f"health_interval: 0.5\n  curve:\n    server_secret_key: {public}\n"
        f"    allowed_clients: {tmp_path}"))
    result = run_cli("run", "--config", str(cfg), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "holds no secret key (that is the public half)" in result.stderr
