"""The main job end to end: a real daemon process on the bundled clip, a real subscriber over
TCP loopback, and the one-line errors a newcomer gets for bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lepton_edge.messages import DetectionMessage, HealthMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import BIKES, ENGINE, VTEST, run_cli, write_config


def collect(endpoint: str, daemon, timeout: float = 60.0) -> list:
    msgs = []
    with Subscriber(endpoint) as sub:
        for msg in sub.messages(timeout=timeout):
            msgs.append(msg)
            if isinstance(msg, HealthMessage) and msg.state == "stopping":
                break
    return msgs


def test_one_message_per_frame_in_order_with_persons(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path / "c.yaml", cameras=[
        {"id": "plaza", "url": str(VTEST), "mode": "bench", "max_frames": 101}])
    daemon = start_daemon(cfg, "--wait-subscribers", "1")
    msgs = collect(daemon.endpoint, daemon)
    assert daemon.wait(30) == 0, daemon.stderr()
    dets = [m for m in msgs if isinstance(m, DetectionMessage)]
    assert [m.seq for m in dets] == list(range(101))
    assert [m.frame for m in dets] == list(range(101))
    assert all(m.camera == "plaza" and (m.width, m.height) == (768, 576) for m in dets)
    frame100 = dets[100]
    persons = [d for d in frame100.detections if d.label == "person"]
    assert len(persons) >= 5, frame100.detections
    assert all(0 <= d.box[0] < d.box[2] <= 768 and 0 <= d.box[1] < d.box[3] <= 576
               for d in frame100.detections)
    assert {"capture", "preprocess", "infer", "decode", "capture_to_publish"} <= set(
        frame100.latency_ms)
    assert frame100.precision == "fp32" and frame100.model == "yolov8n"
    health = [m for m in msgs if isinstance(m, HealthMessage)]
    assert health[-1].state == "stopping"
    assert health[-1].cameras[0].published == 101
    assert "summary: 101 frames" in daemon.stderr()


def test_two_cameras_in_one_daemon_both_publish(tmp_path: Path, start_daemon) -> None:
    cfg = write_config(tmp_path / "c.yaml", cameras=[
        {"id": "plaza", "url": str(VTEST), "mode": "bench", "max_frames": 15},
        {"id": "street", "url": str(BIKES), "mode": "bench", "max_frames": 15}])
    daemon = start_daemon(cfg, "--wait-subscribers", "1")
    msgs = collect(daemon.endpoint, daemon)
    assert daemon.wait(30) == 0, daemon.stderr()
    by_cam: dict[str, list[int]] = {}
    for m in msgs:
        if isinstance(m, DetectionMessage):
            by_cam.setdefault(m.camera, []).append(m.seq)
    assert by_cam == {"plaza": list(range(15)), "street": list(range(15))}
    street = next(m for m in msgs if isinstance(m, DetectionMessage) and m.camera == "street")
    assert (street.width, street.height) == (640, 272)


def _line(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def _error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("lepton-edge: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_bad_config_names_the_field_and_exits_2(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", cameras=[{"id": "plaza", "urll": str(VTEST)}])
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    line = _error_line(result)
    assert "cameras[0].urll: unknown key" in line and "cameras[0].url: required" in line
    assert f"{cfg}:" in line


def test_backend_option_the_backend_does_not_read_is_named(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", backend="onnxruntime",
                       backend_options={"requests": 2})
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    line = _error_line(result)
    assert f"{cfg}:{_line(cfg, 'requests:')}: backend_options.requests: onnxruntime does not " \
           f"read this option" in line


def test_missing_model_says_which_path(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", model=str(tmp_path / "nowhere"))
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 3
    assert "nowhere: model not found" in _error_line(result)


def test_corrupt_model_file_is_caught_by_its_checksum(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art)
    model = art / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    model.write_bytes(bytes(data))
    cfg = write_config(tmp_path / "c.yaml", model=str(art))
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 3
    line = _error_line(result)
    assert "model.onnx: sha256" in line and "does not match the manifest" in line


def test_garbage_onnx_file_gives_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    cfg = write_config(tmp_path / "c.yaml", model=str(bad))
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 3
    assert "broken.onnx: not a valid ONNX model" in _error_line(result)


def test_unreadable_video_is_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF" + b"\x00" * 4096)
    cfg = write_config(tmp_path / "c.yaml", cameras=[
        {"id": "a", "url": str(junk), "mode": "bench"},
        {"id": "b", "url": str(tmp_path / "missing.mp4"), "mode": "bench"}])
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 4, result.stderr
    assert "junk.avi: cannot open" in result.stderr or "junk.avi: no frame" in result.stderr
    assert "missing.mp4: video file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    """deploy/bench.yaml style: paths relative to the config, run from another directory."""
    (tmp_path / "deploy").mkdir()
    shutil.copytree(ENGINE, tmp_path / "engines" / "yolov8n")
    (tmp_path / "samples").mkdir()
    shutil.copy(BIKES, tmp_path / "samples" / "bikes.mp4")
    cfg = tmp_path / "deploy" / "bench.yaml"
    write_config(cfg, model="../engines/yolov8n", cameras=[
        {"id": "s", "url": "../samples/bikes.mp4", "mode": "bench", "max_frames": 3}])
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    assert "summary: 3 frames" in result.stderr


def test_bundled_bench_config_is_valid() -> None:
    from lepton_edge.config import load_config

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "deploy" / "bench.yaml")
    assert Path(cfg.camera_url(cfg.cameras[0])).resolve() == VTEST.resolve()
    assert cfg.resolve(cfg.model).resolve() == ENGINE.resolve()
    assert yaml.safe_load((repo / "deploy" / "bench.yaml").read_text())["cameras"]


# Issue 15 item 6 (red on 5b6f079: --endpoint bypassed the validator; tcp://*:99999 bound port
# 34463 and the run went on).
def test_a_bad_endpoint_flag_is_refused_naming_the_flag(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    result = run_cli("run", "--config", str(cfg), "--endpoint", "tcp://*:99999")
    assert result.returncode == 2, result.stderr
    assert _error_line(result) == ("lepton-edge: error: --endpoint tcp://*:99999: "
                                   "publish.endpoint: 'tcp://*:99999': port 99999 is out of "
                                   "range 1..65535")
    assert "publishing on" not in result.stderr


def test_a_bad_endpoint_in_the_file_names_its_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", publish={"endpoint": "tcp://127.0.0.1:abc"})
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}:{_line(cfg, 'endpoint:')}: publish.endpoint: 'tcp://127.0.0.1:abc': port " \
           f"'abc' is not a number" in _error_line(result)


# Issue 15 item 9 (red on 5b6f079: "cannot bind ... is another daemon using it?" named neither
# the file nor the line).
def test_a_bind_error_names_the_file_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.yaml", publish={"endpoint": f"tcp://127.0.0.1:{port}"})
        result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2, result.stderr
    assert f"{cfg}:{_line(cfg, 'endpoint:')}: publish.endpoint: cannot bind " \
           f"tcp://127.0.0.1:{port}" in _error_line(result)


# Issue 15 item 9 (red on 5b6f079: UnicodeDecodeError traceback, exit 1).
def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    cfg.write_bytes(b"# \xff\xfe latin-1 notes\n" + cfg.read_bytes())
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert _error_line(result) == (f"lepton-edge: error: {cfg}:1: not UTF-8 text (byte 0xff); "
                                   f"save the config as UTF-8")


# Issue 15 item 9 (red on 5b6f079: no file or line in the message).
def test_an_unknown_class_names_the_file_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", classes=["person", "bycicle"])
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert f"{cfg}:{_line(cfg, '- bycicle')}: classes[1]: 'bycicle' not among the 80 classes " \
           f"of model yolov8n; did you mean 'bicycle'" in _error_line(result)


# Issue 12 item 1 (red on 5b6f079: the backend loaded, the warm-up ran, then a ValueError
# traceback from Pipeline()).
def test_a_model_family_without_a_decoder_stops_before_the_model_loads(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("*.int8*", "openvino*", "cache"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    manifest.update(family="yolov5", models={"fp32": manifest["models"]["fp32"]},
                    files={"model.onnx": manifest["files"]["model.onnx"]})
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    cfg = write_config(tmp_path / "c.yaml", model=str(art))
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 3, result.stderr
    assert "model family 'yolov5' has no decoder here (known: yolov8)" in _error_line(result)
    assert "warm-up" not in result.stderr


# Issue 15 item 9 (red on 5b6f079: zmq.error.ZMQError: Invalid argument, traceback, exit 1).
def test_a_curve_secret_key_of_the_wrong_length_is_one_line(tmp_path: Path) -> None:
    assert run_cli("keys", "--dir", str(tmp_path / "keys")).returncode == 0
    secret = tmp_path / "keys" / "server.key_secret"
    secret.write_text(secret.read_text().replace('secret-key = "', 'secret-key = "x', 1))
    (tmp_path / "clients").mkdir()
    cfg = write_config(tmp_path / "c.yaml", publish={
        "endpoint": "tcp://127.0.0.1:0",
        "curve": {"server_secret_key": str(secret), "allowed_clients": str(tmp_path / "clients")}})
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 2
    line = _error_line(result)
    assert f"{cfg}:{_line(cfg, 'server_secret_key')}: publish.curve.server_secret_key: " \
           f"{secret}: the secret key is 41 characters, a CURVE key is 40" in line


# Issue 15 item 10 (red on 5b6f079: the config's log_level: info won; INFO lines printed; and
# after the subcommand the flag was refused).
@pytest.mark.parametrize("where", ["before", "after"])
def test_log_level_flag_beats_the_config(tmp_path: Path, where: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", log_level="info", cameras=[
        {"id": "plaza", "url": str(VTEST), "mode": "bench", "max_frames": 3}])
    args = ["run", "--config", str(cfg)]
    args = ["--log-level", "warning", *args] if where == "before" else [*args, "--log-level",
                                                                          "warning"]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "summary: 3 frames" in result.stderr
    assert " INFO " not in result.stderr, result.stderr
