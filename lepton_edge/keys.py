"""`lepton-edge keys`: ZeroMQ CURVE keypairs for the publisher and its allowed subscribers.

    lepton-edge keys --dir /etc/lepton-edge/keys --name server     # the daemon's keypair
    lepton-edge keys --dir ./keys --name control-room               # one per subscriber

Each run writes `NAME.key` (the public key: safe to copy, give it to the other side) and
`NAME.key_secret` (the keypair, mode 0600: never leaves its machine), in the ZeroMQ
certificate format that `zmq.auth` reads. The daemon's config then names its secret file and a
directory holding the public `.key` files of the clients it accepts:

    publish:
      curve: {server_secret_key: keys/server.key_secret, allowed_clients: keys/clients}

An existing key is never overwritten unless `--force` is given: replacing a server key cuts
off every subscriber that trusts the old one.

The daemon reads `allowed_clients` with `load_allowed_clients`: a file it cannot use (not a
public key, unreadable, a secret key copied there by mistake) is skipped and named, so one bad
file among forty cameras' keys locks out that camera only, never all of them.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lepton_edge.errors import ConfigError

SECRET_MODE = 0o600
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def key_paths(directory: Path, name: str) -> tuple[Path, Path]:
    """(public, secret) file paths of keypair `name` in `directory`."""
    return directory / f"{name}.key", directory / f"{name}.key_secret"


def create_keypair(directory: Path, name: str, *, force: bool = False) -> tuple[Path, Path]:
    """Write a new CURVE keypair; returns (public file, secret file). The secret file is
    created with mode 0600 (no moment where others could read it). Raises ConfigError when a
    file exists and `force` is False, or when the name or directory is unusable."""
    import zmq
    import zmq.auth

    if not _NAME.match(name) or name.startswith("."):
        raise ConfigError(f"keys --name: {name!r} must be letters, digits, '_', '-' or '.' "
                          f"(it becomes a file name), e.g. server or camera-hall")
    if not zmq.has("curve"):
        raise ConfigError("this libzmq has no CURVE support; install pyzmq's wheels from PyPI "
                          "(they bundle libsodium) or a libzmq built with it")
    public, secret = key_paths(directory, name)
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; keeping it (subscribers may trust it). "
                          f"Pass --force to replace the keypair, or choose another --name")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path in existing:
            path.unlink()  # create_certificates would keep the old file's mode
        old_umask = os.umask(0o077)
        try:
            made_public, made_secret = zmq.auth.create_certificates(str(directory), name)
        finally:
            os.umask(old_umask)
        os.chmod(made_secret, SECRET_MODE)
        os.chmod(made_public, 0o644)  # the public half is meant to be copied around
    except OSError as err:
        raise ConfigError(f"keys --dir: cannot write keys in {directory} ({err.strerror})") \
            from err
    return Path(made_public), Path(made_secret)


@dataclass(frozen=True)
class AllowedClients:
    """The client public keys a CURVE publisher accepts, read from one directory."""

    directory: Path
    keys: Mapping[bytes, str]  # Z85 public key (40 bytes) -> the file it came from
    skipped: tuple[str, ...]  # one "FILE: why it is not used" per file left out


def read_public_key(path: Path) -> bytes:
    """The Z85 public key (40 bytes) of a `.key` file written by `lepton-edge keys`. Raises
    ConfigError naming the file and what is wrong with it."""
    import zmq.auth
    from zmq.utils import z85

    try:
        public, _ = zmq.auth.load_certificate(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from err
    except ValueError as err:
        raise ConfigError(f"{path}: no public-key line, not a key file from `lepton-edge keys`") \
            from err
    try:
        raw = z85.decode(public)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{path}: public-key is not a Z85 CURVE key ({len(public)} characters, "
                          f"expected 40 of Z85's alphabet)") from err
    if len(raw) != 32:
        raise ConfigError(f"{path}: public-key is {len(public)} characters, expected 40")
    return public


def load_allowed_clients(directory: Path) -> AllowedClients:
    """Every usable `*.key` in `directory`; the files left out are listed in `skipped` with
    the reason (hidden files are ignored). Raises ConfigError when the directory is missing or
    holds no usable key: a daemon that accepts no one must not start as if all were well."""
    try:
        entries = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError as err:
        raise ConfigError(f"publish.curve.allowed_clients: {directory} is not a readable "
                          f"directory of client public keys ({err.strerror or err})") from err
    keys: dict[bytes, str] = {}
    skipped: list[str] = []
    for path in entries:
        if path.suffix != ".key":
            why = ("a secret key: only the public .key belongs here, and a secret key should "
                   "never leave its machine" if path.suffix == ".key_secret"
                   else "not a .key file")
            skipped.append(f"{path}: {why}")
            continue
        try:
            keys.setdefault(read_public_key(path), path.name)
        except ConfigError as err:
            skipped.append(str(err))
    if not keys:
        found = "; ".join(skipped) if skipped else "it is empty"
        raise ConfigError(f"publish.curve.allowed_clients: no usable client public key in "
                          f"{directory} ({found}); copy there the .key file that `lepton-edge "
                          f"keys` wrote for each subscriber")
    return AllowedClients(directory, keys, tuple(skipped))


Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85 text


def check_key(key: bytes | None, path: Path | str, which: str) -> bytes:
    """`key` (Z85 text from a certificate file) if it is a CURVE key; else a ConfigError naming
    `path` and what is wrong (ZeroMQ itself would raise a bare EINVAL on the socket)."""
    from zmq.utils import z85

    fix = "make a new keypair with `lepton-edge keys`"
    if key is None:
        raise ConfigError(f"{path}: holds no {which} key; {fix}")
    if len(key) != Z85_KEY_LENGTH:
        raise ConfigError(f"{path}: the {which} key is {len(key)} characters, a CURVE key is "
                          f"{Z85_KEY_LENGTH} (Z85); the file is damaged: {fix}")
    try:
        z85.decode(key)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: the {which} key is not Z85 text; {fix}") from err
    return key


def load_secret_keypair(path: Path | str) -> tuple[bytes, bytes]:
    """(public, secret) from a `NAME.key_secret` file, each checked by `check_key`. Raises
    ConfigError naming the file: unreadable, not a certificate, a public-only file, a key of
    the wrong length."""
    import zmq.auth

    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise ConfigError(f"{path}: cannot load the CURVE key ({why}); make one with "
                          f"`lepton-edge keys`") from err
    if secret is None:
        raise ConfigError(f"{path}: holds no secret key (that is the public half); name the "
                          f"NAME.key_secret file `lepton-edge keys` wrote")
    return check_key(public, path, "public"), check_key(secret, path, "secret")


def main_keys(args: argparse.Namespace) -> int:
    """The `keys` subcommand: prints which file is public and which is secret."""
    directory = Path(args.dir)
    public, secret = create_keypair(directory, args.name, force=getattr(args, "force", False))
    print(f"public key: {public}  (give this to the other side: a client's goes into the "
          f"daemon's publish.curve.allowed_clients directory, the server's to every client)")
    print(f"secret key: {secret}  (mode 0600; keep it on this machine, never copy it)")
    return 0
