"""The plan cache on any machine: keys, atomic files, integrity checks and rebuilds.

The builder and deserializer are real byte-level stand-ins for TensorRT's (a length-prefixed
format that refuses truncated input), which is what the cache is injected with; the cache
itself is the thing under test and runs unmodified."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct

import pytest

from lepton_edge.backends.tensorrt.engine_cache import (
    EngineCache,
    PlanKey,
    l4t_release,
    write_atomic,
)
from lepton_edge.config import default_state_dir
from lepton_edge.errors import ModelError

MAGIC = b"LEPTONTESTPLAN"
LOGGER = "lepton_edge.backends.tensorrt.engine_cache"

KEY = PlanKey(onnx_sha256="a" * 64, settings={"max_batch": 1, "max_hw": [640, 640]}, recipe=2,
              tensorrt_version="10.13.0", gpu_name="NVIDIA Orin", compute_capability="8.7",
              l4t_release="R36 (release), REVISION: 4.3")


class ByteBuilder:
    """Serializes a payload as MAGIC + length + payload + sha256; counts its builds."""

    def __init__(self, payload: bytes = b"weights" * 1000) -> None:
        self.payload = payload
        self.calls = 0

    def __call__(self) -> bytes:
        self.calls += 1
        body = struct.pack("<Q", len(self.payload)) + self.payload
        return MAGIC + body + hashlib.sha256(body).digest()


class ByteDeserializer:
    """Returns the payload, or None (TensorRT's way) for anything malformed; records inputs."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, data: bytes) -> bytes | None:
        self.seen.append(data)
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8 + 32:
            return None
        body, digest = data[len(MAGIC):-32], data[-32:]
        (n,) = struct.unpack("<Q", body[:8])
        if len(body) != 8 + n or hashlib.sha256(body).digest() != digest:
            return None
        return body[8:]


def test_default_state_dir_prefers_systemd_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path}/state:{tmp_path}/other")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "state"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert default_state_dir() == tmp_path / "xdg" / "lepton-edge"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".cache" / "lepton-edge"


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "b" * 64},
    {"settings": {"max_batch": 2, "max_hw": [640, 640]}},
    {"settings": {"max_batch": 1, "max_hw": [640, 640], "workspace_mib": 512}},
    {"recipe": 3},
    {"tensorrt_version": "10.13.3"},
    {"tensorrt_version": "11.0.0"},
    {"gpu_name": "NVIDIA H200"},
    {"compute_capability": "8.9"},
    {"l4t_release": "R36 (release), REVISION: 4.4"},
    {"l4t_release": None},
], ids=lambda c: next(iter(c)))
def test_key_changes_with_each_of_its_parts(change):
    other = dataclasses.replace(KEY, **change)
    assert other.digest != KEY.digest
    assert len(KEY.digest) == 32


def test_key_is_stable_and_ignores_settings_order():
    same = dataclasses.replace(KEY, settings={"max_hw": [640, 640], "max_batch": 1})
    assert same.digest == KEY.digest
    assert PlanKey(**dataclasses.asdict(KEY)).digest == KEY.digest


def test_builds_once_then_loads_from_the_cache(tmp_path):
    cache, build, load = EngineCache(tmp_path), ByteBuilder(), ByteDeserializer()
    first = cache.load_or_build(KEY, build, load)
    assert first.built and build.calls == 1 and first.value == build.payload
    assert first.path == tmp_path / "engines" / f"{KEY.digest}.plan"
    meta = json.loads(cache.sidecar_path(KEY).read_text())
    assert meta["key"] == KEY.fields()
    assert meta["sha256"] == hashlib.sha256(first.path.read_bytes()).hexdigest()
    second = EngineCache(tmp_path).load_or_build(KEY, build, load)
    assert not second.built and build.calls == 1 and second.value == build.payload
    leftovers = [p.name for p in (tmp_path / "engines").iterdir()
                 if p.suffix not in (".plan", ".json", ".lock")]
    assert leftovers == []  # no temp files from the atomic writes


def test_truncated_plan_is_rebuilt_not_loaded(tmp_path, caplog):
    cache, build, load = EngineCache(tmp_path), ByteBuilder(), ByteDeserializer()
    path = cache.load_or_build(KEY, build, load).path
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a copy or a write cut short
    load.seen.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        again = cache.load_or_build(KEY, build, load)
    assert again.built and build.calls == 2
    assert load.seen == [whole]  # the truncated bytes never reached the deserializer
    assert path.read_bytes() == whole
    assert "truncated" in caplog.text and "rebuilding" in caplog.text


def test_corrupt_plan_of_the_right_size_is_rebuilt(tmp_path, caplog):
    cache, build, load = EngineCache(tmp_path), ByteBuilder(), ByteDeserializer()
    path = cache.load_or_build(KEY, build, load).path
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert cache.load_or_build(KEY, build, load).built
    assert "does not match its sidecar" in caplog.text


@pytest.mark.parametrize("damage", ["delete", "garbage", "other-key"])
def test_plan_without_a_matching_sidecar_is_rebuilt(tmp_path, damage):
    cache, build, load = EngineCache(tmp_path), ByteBuilder(), ByteDeserializer()
    cache.load_or_build(KEY, build, load)
    sidecar = cache.sidecar_path(KEY)
    if damage == "delete":
        sidecar.unlink()
    elif damage == "garbage":
        sidecar.write_text("{not json")
    else:
        meta = json.loads(sidecar.read_text())
        meta["key"]["gpu_name"] = "some other GPU"
        sidecar.write_text(json.dumps(meta))
    assert cache.load_or_build(KEY, build, load).built
    assert build.calls == 2


def test_plan_that_fails_to_deserialize_is_rebuilt_once(tmp_path, caplog):
    cache, build = EngineCache(tmp_path), ByteBuilder()
    cache.load_or_build(KEY, build, ByteDeserializer())
    calls = []

    def refuses_first(data: bytes) -> bytes | None:  # a plan from another TensorRT build
        calls.append(data)
        return None if len(calls) == 1 else ByteDeserializer()(data)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        again = cache.load_or_build(KEY, build, refuses_first)
    assert again.built and build.calls == 2 and len(calls) == 2
    assert "failed to deserialize" in caplog.text


def test_fresh_plan_that_does_not_deserialize_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not deserialize"):
        EngineCache(tmp_path).load_or_build(KEY, ByteBuilder(), lambda data: None)


def test_empty_build_is_refused(tmp_path):
    with pytest.raises(ModelError, match="empty plan"):
        EngineCache(tmp_path).load_or_build(KEY, lambda: b"", ByteDeserializer())


def test_write_atomic_replaces_whole_files(tmp_path):
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")
    write_atomic(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_l4t_release_reads_the_jetson_release_line(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, "
                 "EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n")
    assert l4t_release(f) == "R36 (release), REVISION: 4.3"
    assert l4t_release(tmp_path / "missing") is None
