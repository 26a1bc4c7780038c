"""`lepton-edge bench` as a real process: a short run prints the stage table and, with --json,
one JSON object on the last line with the same run's end-to-end and bare fps."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import VTEST, run_cli, write_config


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
