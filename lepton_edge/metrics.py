"""The optional Prometheus endpoint (`metrics: {port: 9108}` in the config).

It exports what the `health` topic carries, read from the pipeline at scrape time (so a camera
removed by a reload disappears from the next scrape), plus per-stage latency histograms fed by
every published frame. `prometheus_client` is imported only when `metrics:` is configured
(`pip install 'lepton-edge[metrics]'`), and the metrics live in their own `CollectorRegistry`,
never the library's global one, so two daemons in one process (tests) cannot collide.

Exported (all prefixed `lepton_edge_`):

    up_seconds, fps, subscribers                        gauges of the whole daemon
    publish_send_errors_total                           messages the publisher had to drop
    camera_state{camera, state}                         1 for the camera's current state, else 0
    camera_fps{camera}                                  capture rate
    camera_frames_total / _dropped_total / _reconnects_total / _published_total {camera}
    stage_latency_seconds{stage}                        histogram, 1 ms .. 2 s
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from .config import Metrics as MetricsSettings
from .errors import ConfigError
from .messages import HealthMessage
from .sources import State

log = logging.getLogger(__name__)

PREFIX = "lepton_edge_"
# A 320-pixel model on a small CPU is a few ms per stage; a cold start or a slow RTSP camera
# reaches seconds. Roughly 1-2-5 per decade over 1 ms .. 2 s.
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                   0.5, 0.75, 1.0, 2.0)
CAMERA_STATES = tuple(s.value for s in State)

OnResult = Callable[[Any, Any, bytes], None]


class MetricsServer:
    """The HTTP endpoint and its registry. Building one does no I/O; `start()` imports
    prometheus_client and listens; `close()` (safe twice) stops listening.

    Args:
        settings: the config's `metrics:` section (host, port).
        health: returns the pipeline's current health (called on each scrape).
        send_errors: returns the publisher's count of dropped sends (called on each scrape).
    """

    def __init__(self, settings: MetricsSettings, health: Callable[[], HealthMessage],
                 send_errors: Callable[[], int] = lambda: 0) -> None:
        self.settings = settings
        self._health = health
        self._send_errors = send_errors
        self._server: Any = None
        self._thread: Any = None
        self._latency: Any = None
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
        self.registry = prom.CollectorRegistry()
        self._latency = prom.Histogram(
            PREFIX + "stage_latency_seconds", "Per-frame latency of each pipeline stage",
            ["stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_HealthCollector(self._health, self._send_errors))
        host, port = self.settings.host, self.settings.port
        try:
            self._server, self._thread = prom.start_http_server(port, addr=host,
                                                                registry=self.registry)
        except OSError as err:
            raise ConfigError(f"metrics.port: cannot listen on {host}:{port} ({err.strerror}); "
                              f"pick a free port or stop what holds it") from err
        log.info("metrics on http://%s:%d/metrics", host, port)

    def observe(self, latency_ms: dict[str, float]) -> None:
        """One frame's stage latencies, in milliseconds as the messages carry them."""
        if self._latency is None:
            return
        for stage, ms in latency_ms.items():
            self._latency.labels(stage).observe(ms / 1000.0)

    def wrap(self, on_result: OnResult | None) -> OnResult:
        """An `on_result` callback for the pipeline that feeds the latency histograms from each
        published payload, then calls `on_result` (the caller's own, if any)."""

        def record(frame: Any, dets: Any, payload: bytes) -> None:
            # The payload is the one place the per-frame timings leave the pipeline; decoding
            # its small JSON costs ~10 us a frame.
            self.observe(json.loads(payload)["latency_ms"])
            if on_result is not None:
                on_result(frame, dets, payload)

        return record

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

    def __init__(self, health: Callable[[], HealthMessage], send_errors: Callable[[], int]):
        self._health = health
        self._send_errors = send_errors

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
        yield CounterMetricFamily(PREFIX + "publish_send_errors",
                                  "Messages dropped by the publisher (subscriber too slow)",
                                  value=self._send_errors())
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
        }
        for cam in h.cameras:
            for s in CAMERA_STATES:
                state.add_metric([cam.id, s], 1.0 if cam.state == s else 0.0)
            fps.add_metric([cam.id], cam.fps)
            for key, family in counters.items():
                family.add_metric([cam.id], getattr(cam, key))
        yield state
        yield fps
        yield from counters.values()
