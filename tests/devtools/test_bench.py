"""`lepton-edge bench` as a real process: a short run prints the stage table and, with --json,
one JSON object on the last line with the same run's end-to-end and bare fps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import VTEST, run_cli, write_config


def test_bench_prints_stages_and_a_json_last_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", input_size=320, cameras=[
        {"id": "plaza", "url": str(VTEST), "mode": "live"}])  # bench forces every frame, in order
    result = run_cli("--log-level", "warning", "bench", "--config", str(cfg), "--frames", "12",
                     "--bare-seconds", "1", "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "onnxruntime fp32 at 320x256, 12 frames, 1 in flight" in lines[0]
    for stage in ("capture", "preprocess", "infer", "decode", "publish"):
        assert any(line.strip().startswith(f"{stage}:") for line in lines), result.stdout
    report = json.loads(lines[-1])
    assert report["frames"] == 12 and report["input"] == [256, 320]
    assert report["e2e_fps"] > 0 and report["bare_fps"] > 0
    assert abs(report["ratio"] - report["e2e_fps"] / report["bare_fps"]) < 0.01
    assert set(report["latency_ms"]["infer"]) == {"p50", "p99"}


def test_bench_needs_a_video_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", cameras=[
        {"id": "gate", "url": "rtsp://127.0.0.1:9/stream", "mode": "live"}])
    result = run_cli("bench", "--config", str(cfg), timeout=60)
    assert result.returncode == 2
    assert "bench needs at least one video file" in result.stderr


def test_bench_compares_backend_options_in_one_run(tmp_path: Path) -> None:
    """`--backend NAME:PRECISION,KEY=VALUE` runs each variant and prints same-run ratios."""
    pytest.importorskip("openvino", reason="needs the openvino extra")
    cfg = write_config(tmp_path / "c.yaml", input_size=320)
    result = run_cli("--log-level", "warning", "bench", "--config", str(cfg), "--frames", "8",
                     "--bare-seconds", "0.5", "--backend", "openvino:fp32",
                     "--backend", "openvino:fp32,input=tensor", "--json", timeout=240)
    assert result.returncode == 0, result.stderr
    assert "relative to openvino fp32 (same run):" in result.stdout
    assert "openvino fp32,input=tensor: end-to-end" in result.stdout
    runs = json.loads(result.stdout.strip().splitlines()[-1])["results"]
    assert [r["options"] for r in runs] == [{}, {"input": "tensor"}]
    assert all(r["frames"] == 8 for r in runs)


def test_bench_refuses_a_malformed_backend_spec_before_running(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    result = run_cli("bench", "--config", str(cfg), "--backend", "openvino:int8,input",
                     timeout=60)
    assert result.returncode == 2
    assert "expected NAME[:PRECISION][,KEY=VALUE...], got 'input'" in result.stderr


# Issue 12 item 1: every variant is resolved before the first runs, and a bad option names the
# flag (red on 5b6f079: the first variant ran to the end, then "backend_options: onnxruntime
# does not know requests" named neither the flag nor the variant).
def test_a_bad_variant_stops_the_bench_before_any_run(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", input_size=320)
    result = run_cli("bench", "--config", str(cfg), "--frames", "4", "--bare-seconds", "0.2",
                     "--backend", "onnxruntime:fp32", "--backend", "onnxruntime:fp32,requests=2",
                     timeout=120)
    assert result.returncode == 2, result.stderr
    assert "lepton-edge: error: --backend onnxruntime:fp32,requests=2: backend_options.requests: " \
           "onnxruntime does not read this option" in result.stderr
    assert result.stdout == ""  # nothing was benched
