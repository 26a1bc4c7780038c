"""The Prometheus endpoint of a running daemon, scraped over real HTTP and parsed with
prometheus_client's own text parser: per-camera state, counters and the per-stage latency
histograms; and a port that is taken gives a one-line error, not a traceback."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import VTEST, free_port, run_cli, write_config

pytest.importorskip("prometheus_client", reason="the metrics extra: pip install "
                    "'lepton-edge[metrics]'")
from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def config(tmp_path: Path, port: int) -> Path:
    return write_config(tmp_path / "c.yaml", input_size=320,
                        metrics={"host": "127.0.0.1", "port": port},
                        cameras=[{"id": "plaza", "url": str(VTEST), "mode": "replay",
                                  "loop": True}])


def test_endpoint_exports_health_and_stage_latency(tmp_path: Path, start_daemon) -> None:
    port = free_port()
    daemon = start_daemon(config(tmp_path, port))
    assert daemon.wait_for_log("first frame published", timeout=60), daemon.stderr()
    assert f"metrics on http://127.0.0.1:{port}/metrics" in daemon.stderr()
    time.sleep(1.0)
    first = scrape(port)

    p = "lepton_edge_"
    assert value(first, p + "camera_state", camera="plaza", state="connected") == 1
    for other in ("connecting", "retrying", "failed", "finished", "stopped"):
        assert value(first, p + "camera_state", camera="plaza", state=other) == 0
    published = value(first, p + "camera_published_total", camera="plaza")
    frames = value(first, p + "camera_frames_total", camera="plaza")
    assert published >= 1 and frames >= published
    assert value(first, p + "camera_reconnects_total", camera="plaza") == 0
    assert (p + "camera_dropped_total", (("camera", "plaza"),)) in first
    assert 0 < value(first, p + "camera_fps", camera="plaza") < 30  # a 10 fps replay
    assert value(first, p + "up_seconds") > 0
    assert value(first, p + "publish_send_errors_total") == 0

    hist = p + "stage_latency_seconds"
    for stage in ("capture", "preprocess", "infer", "decode", "capture_to_publish"):
        count = value(first, hist + "_count", stage=stage)
        assert count >= 1
        assert value(first, hist + "_bucket", stage=stage, le="+Inf") == count
        assert value(first, hist + "_sum", stage=stage) > 0
    assert value(first, hist + "_bucket", stage="infer", le="0.001") <= value(
        first, hist + "_bucket", stage="infer", le="2.0")

    time.sleep(1.0)
    second = scrape(port)
    assert value(second, p + "camera_published_total", camera="plaza") > published
    assert value(second, hist + "_count", stage="infer") > value(first, hist + "_count",
                                                                 stage="infer")
    daemon.send(signal.SIGTERM)
    assert daemon.wait(20) == 0, daemon.stderr()


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", "--config", str(config(tmp_path, port)), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("lepton-edge: error:")]
    assert len(errors) == 1 and f"metrics.port: cannot listen on 127.0.0.1:{port}" in errors[0]
