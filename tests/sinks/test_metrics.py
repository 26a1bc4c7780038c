"""The Prometheus endpoint of a running daemon, scraped over real HTTP and parsed with
prometheus_client's own text parser: per-camera state, counters, detections per class, the
per-stage latency histograms, the process collectors and build_info; a MetricsServer fed
through `observe` counts exactly what it was given; it listens on loopback unless told
otherwise; and a port that is taken gives a one-line error, not a traceback."""

from __future__ import annotations

import platform
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lepton_edge import __version__
from lepton_edge.config import Metrics
from lepton_edge.messages import CameraHealth, HealthMessage
from lepton_edge.sinks.metrics import MetricsServer
from tests.conftest import VTEST, free_port, run_cli, write_config

pytest.importorskip("prometheus_client", reason="the metrics extra: pip install "
                    "'lepton-edge[metrics]'")
from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int, host: str = "127.0.0.1"
           ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from /metrics."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as resp:
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
    started = time.time()
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
    # Issue 15, item 11: it could never count (XPUB drops silently), so it is gone.
    assert not [k for k in first if k[0].startswith(p + "publish_send_errors")]
    # The standard collectors a custom registry lacked, of this very process.
    assert 50e6 < value(first, "process_resident_memory_bytes") < 8e9
    assert value(first, "process_cpu_seconds_total") > 0
    assert value(first, "process_start_time_seconds") == pytest.approx(started, abs=30)
    assert [dict(k[1])["version"] for k in first if k[0] == "python_info"] == [
        platform.python_version()]
    build = [k for k in first if k[0] == p + "build_info"]
    assert build == [(p + "build_info", (("backend", "onnxruntime"), ("model", "yolov8n"),
                                         ("precision", "fp32"),
                                         ("python", platform.python_version()),
                                         ("version", __version__)))]
    assert value(first, p + "build_info", **dict(build[0][1])) == 1
    assert started - 1 < value(first, p + "start_time_seconds") < time.time()
    # vtest.avi is a plaza with pedestrians: people are counted under their class name.
    detections = {dict(k[1])["label"]: v for k, v in first.items()
                  if k[0] == p + "detections_total" and dict(k[1])["camera"] == "plaza"}
    assert detections.get("person", 0) >= published, detections

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
    assert value(second, p + "detections_total", camera="plaza", label="person") > detections[
        "person"]
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


def _health() -> HealthMessage:
    cam = CameraHealth(id="gate-1", state="connected", fps=9.5, frames=120, dropped=3,
                       reconnects=1, published=117)
    return HealthMessage(ts=time.time(), state="running", uptime_s=12.0, fps=9.5,
                         subscribers=2, cameras=(cam,))


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    srv = MetricsServer(Metrics(port=free_port()), _health,
                        build={"model": "m", "backend": "b", "precision": "int8"})
    srv.start()
    yield srv
    srv.close()
    srv.close()  # safe twice


def test_observe_counts_detections_per_camera_and_class(server: MetricsServer) -> None:
    labels = ["person", "bicycle", "car"]
    server.observe("gate-1", labels, np.array([0, 2, 2, 0, 0], np.int32),
                   {"infer": 20.0, "capture_to_publish": 31.0})
    server.observe("gate-1", labels, np.array([2], np.int64), {"infer": 1500.0})
    server.observe("gate-2", labels, np.array([1, 7], np.int32), {"infer": 0.5})
    server.observe("gate-2", labels, np.zeros(0, np.int32), {"infer": 0.5})
    got = scrape(server.settings.port)
    p = "lepton_edge_"
    assert {dict(k[1])["camera"] + "/" + dict(k[1])["label"]: v for k, v in got.items()
            if k[0] == p + "detections_total"} == {
        "gate-1/person": 3, "gate-1/car": 3, "gate-2/bicycle": 1, "gate-2/7": 1}
    hist = p + "stage_latency_seconds"
    assert value(got, hist + "_count", stage="infer") == 4
    assert value(got, hist + "_sum", stage="infer") == pytest.approx(1.521)
    assert value(got, hist + "_bucket", stage="infer", le="0.001") == 2
    assert value(got, hist + "_bucket", stage="infer", le="1.0") == 3
    assert value(got, hist + "_count", stage="capture_to_publish") == 1
    # The health collector, read at scrape time.
    assert value(got, p + "camera_published_total", camera="gate-1") == 117
    assert value(got, p + "camera_dropped_total", camera="gate-1") == 3
    assert value(got, p + "subscribers") == 2
    assert value(got, p + "build_info", version=__version__, python=platform.python_version(),
                 model="m", backend="b", precision="int8") == 1
    assert value(got, "process_resident_memory_bytes") > 10e6
    assert abs(value(got, p + "start_time_seconds") - time.time()) < 60


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(("host", "elsewhere"), [(None, False), ("0.0.0.0", True)])
def test_the_endpoint_is_on_loopback_unless_told(host: str | None, elsewhere: bool) -> None:
    """Issue 15, item 7: it listened on every interface by default. 127.0.0.2 is another
    address of this machine (all of 127/8 is loopback on Linux) that a 127.0.0.1 bind refuses
    and a 0.0.0.0 bind accepts."""
    settings = Metrics(port=free_port()) if host is None else Metrics(port=free_port(),
                                                                      host=host)
    assert settings.host == (host or "127.0.0.1")
    srv = MetricsServer(settings, _health)
    srv.start()
    try:
        assert _connects("127.0.0.1", settings.port)
        assert _connects("127.0.0.2", settings.port) is elsewhere
    finally:
        srv.close()
