"""The optional Prometheus endpoint (`metrics: {port: 9108}` in the config; it listens on
127.0.0.1 unless `host:` says otherwise, e.g. `host: 0.0.0.0` for a Prometheus on another box).

It exports what the `health` topic carries, read from the pipeline at scrape time (so a camera
removed by a reload disappears from the next scrape), plus per-stage latency histograms and
per-class detection counters fed by every published frame (`observe`). `prometheus_client` is
imported only when `metrics:` is configured (`pip install 'lepton-edge[metrics]'`), and the
metrics live in their own `CollectorRegistry`, never the library's global one, so two daemons
in one process (tests) cannot collide; the standard process and platform collectors are
registered in it too.

Exported (all prefixed `lepton_edge_` except the standard ones):

    build_info{version, python, model, backend, precision}   always 1
    start_time_seconds                                  epoch seconds the endpoint started
    up_seconds, fps, subscribers                        gauges of the whole daemon
    camera_state{camera, state}                         1 for the camera's current state, else 0
    camera_fps{camera}                                  capture rate
    camera_frames_total / _dropped_total / _reconnects_total / _published_total {camera}
    detections_total{camera, label}                     boxes published, per class
    stage_latency_seconds{stage}                        histogram, 1 ms .. 2 s
    process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...,
    python_info, python_gc_*                            prometheus_client's standard collectors

Messages a slow subscriber loses are not counted here: XPUB (like PUB) drops them silently at
the high-water mark, so the publisher cannot see them; a subscriber sees them as gaps in `seq`.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from lepton_edge import __version__
from lepton_edge.config import Metrics as MetricsSettings
from lepton_edge.errors import ConfigError
from lepton_edge.messages import HealthMessage
from lepton_edge.pipeline.sources import State

log = logging.getLogger(__name__)

PREFIX = "lepton_edge_"
# A 320-pixel model on a small CPU is a few ms per stage; a cold start or a slow RTSP camera
# reaches seconds. Roughly 1-2-5 per decade over 1 ms .. 2 s.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                   0.5, 0.75, 1.0, 2.0)
CAMERA_STATES = tuple(s.value for s in State)



class MetricsServer:
    """The HTTP endpoint and its registry. Building one does no I/O; `start()` imports
    prometheus_client and listens; `close()` (safe twice) stops listening.

    Args:
        settings: the config's `metrics:` section (host, port).
        health: returns the pipeline's current health (called on each scrape).
        build: labels of `build_info` besides version and python (model, backend,
            precision); values are strings.
    """

    def __init__(self, settings: MetricsSettings, health: Callable[[], HealthMessage], *,
                 build: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._health = health
        self._build = {"version": __version__, "python": platform.python_version(),
                       **(build or {})}
        self._server: Any = None
        self._thread: Any = None
        self._latency: Any = None
        self._detections: Any = None
        self._det_children: dict[tuple[str, str], Any] = {}
        self.registry: Any = None

    def start(self) -> None:
        try:
            import prometheus_client as prom
        except ImportError as err:
            raise ConfigError(
                f"metrics: is configured but prometheus_client cannot be imported ({err}); "
                f"install it with pip install 'lepton-edge[metrics]', or remove metrics: from "
                f"the config"
            ) from err
        registry = self.registry = prom.CollectorRegistry()
        # What the global registry has by default, which a custom registry lacks: RSS, CPU,
        # open fds, start time of the process; interpreter version; GC counts.
        prom.ProcessCollector(registry=registry)
        prom.PlatformCollector(registry=registry)
        prom.GCCollector(registry=registry)
        prom.Info(PREFIX + "build", "Version of lepton-edge and what this daemon runs",
                  registry=registry).info(self._build)
        prom.Gauge(PREFIX + "start_time_seconds", "When the daemon started (epoch seconds)",
                   registry=registry).set(time.time())
        self._latency = prom.Histogram(
            PREFIX + "stage_latency_seconds", "Per-frame latency of each pipeline stage",
            ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self._detections = prom.Counter(
            PREFIX + "detections", "Detections published, per camera and class",
            ["camera", "label"], registry=registry)
        registry.register(_HealthCollector(self._health))
        host, port = self.settings.host, self.settings.port
        try:
            self._server, self._thread = prom.start_http_server(port, addr=host,
                                                                registry=registry)
        except OSError as err:
            raise ConfigError(f"metrics.port: cannot listen on {host}:{port} ({err.strerror}); "
                              f"pick a free port or stop what holds it") from err
        log.info("metrics on http://%s:%d/metrics", host, port)

    def observe(self, camera: str, labels: Sequence[str], class_ids: np.ndarray,
                latency_ms: Mapping[str, float]) -> None:
        """One published frame: its detections and its stage latencies.

        Args:
            camera: the camera id.
            labels: the model's class names, indexed by class id (a class id outside them
                is counted under its number).
            class_ids: (N,) integer class id of each detection of the frame.
            latency_ms: stage name -> milliseconds, as the messages carry them.
        """
        if self._latency is None:
            return
        for stage, ms in latency_ms.items():
            self._latency.labels(stage).observe(ms / 1000.0)
        if len(class_ids) == 0:
            return
        ids, counts = np.unique(np.asarray(class_ids, np.int64), return_counts=True)
        for c, n in zip(ids.tolist(), counts.tolist(), strict=True):
            label = labels[c] if 0 <= c < len(labels) else str(c)
            child = self._det_children.get((camera, label))
            if child is None:  # labels() hashes and locks; one lookup per new pair
                child = self._det_children[camera, label] = self._detections.labels(camera,
                                                                                    label)
            child.inc(n)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None


class _HealthCollector:
    """Builds the health metrics at scrape time (prometheus_client's custom-collector API)."""

    def __init__(self, health: Callable[[], HealthMessage]) -> None:
        self._health = health

    def describe(self) -> list[Any]:
        return []  # unknown until the first scrape: cameras come and go with reloads

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h = self._health()
        yield GaugeMetricFamily(PREFIX + "up_seconds", "Seconds since the pipeline started",
                                value=h.uptime_s)
        yield GaugeMetricFamily(PREFIX + "fps", "Frames published per second, all cameras",
                                value=h.fps)
        yield GaugeMetricFamily(PREFIX + "subscribers", "ZeroMQ subscriptions",
                                value=h.subscribers)
        state = GaugeMetricFamily(PREFIX + "camera_state",
                                  "1 for the camera's current state, 0 for the others",
                                  labels=["camera", "state"])
        fps = GaugeMetricFamily(PREFIX + "camera_fps", "Frames captured per second",
                                labels=["camera"])
        counters = {
            "frames": CounterMetricFamily(PREFIX + "camera_frames", "Frames captured",
                                          labels=["camera"]),
            "dropped": CounterMetricFamily(PREFIX + "camera_dropped",
                                           "Frames dropped because inference was busy",
                                           labels=["camera"]),
            "reconnects": CounterMetricFamily(PREFIX + "camera_reconnects",
                                              "Reconnect attempts", labels=["camera"]),
            "published": CounterMetricFamily(PREFIX + "camera_published",
                                             "Detection messages published", labels=["camera"]),
            "skipped": CounterMetricFamily(PREFIX + "camera_skipped",
                                           "Frames the detect rate or motion gate did not infer",
                                           labels=["camera"]),
        }
        verdicts = CounterMetricFamily(PREFIX + "inspection", "Inspection triggers and their "
                                       "outcomes (pass, fail, error, timeout, overrun, ...)",
                                       labels=["camera", "outcome"])
        for cam in h.cameras:
            for s in CAMERA_STATES:
                state.add_metric([cam.id, s], 1.0 if cam.state == s else 0.0)
            fps.add_metric([cam.id], cam.fps)
            for key, family in counters.items():
                family.add_metric([cam.id], getattr(cam, key))
            for outcome, n in (cam.inspection or {}).items():
                if outcome != "pending":
                    verdicts.add_metric([cam.id, outcome], n)
        yield state
        yield fps
        yield from counters.values()
        yield verdicts
