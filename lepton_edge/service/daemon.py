"""`lepton-edge run`: builds the pipeline from a config in one place, runs it until SIGTERM or
SIGINT (or, with only bench sources, the end of the clips), and tears it down in reverse order.

systemd: READY=1 once the model has run a warm-up inference and the cameras are starting (a
camera down at boot must not fail the service: its state is on the health topic and in
STATUS), WATCHDOG=1 from the inference loop's heartbeat (so a hung backend stops feeding it,
while idle cameras do not), STATUS= with fps and camera states, STOPPING=1 before draining.
SIGHUP re-reads the config: added cameras start, removed ones stop, changed ones restart,
unchanged ones keep running; thresholds, classes and log level apply at once; anything else
(model, backend, publish, ...) needs a restart and the reload is refused with a log line saying
so. An invalid new config is refused and the old one keeps running.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zmq

from lepton_edge import logs
from lepton_edge.artifact import Artifact
from lepton_edge.backends import create_backend
from lepton_edge.backends.base import Backend
from lepton_edge.config import Camera, Config
from lepton_edge.detections import Detections
from lepton_edge.errors import ConfigError, LeptonError
from lepton_edge.messages import HealthMessage
from lepton_edge.pipeline.preprocess import configure_opencv, padded_buffer
from lepton_edge.pipeline.runner import Pipeline, PipelineSettings
from lepton_edge.pipeline.sources import Source, State, configure_ffmpeg
from lepton_edge.pipeline.stats import format_latency
from lepton_edge.results import CameraAnalyser
from lepton_edge.run import ResolvedRun
from lepton_edge.service.notify import SystemdNotifier
from lepton_edge.sinks.base import Sink
from lepton_edge.sinks.callback import CallbackSink, OnFrame
from lepton_edge.sinks.publisher import Publisher
from lepton_edge.sinks.recorder import RecorderSink
from lepton_edge.sinks.zmq import ZmqSink

if TYPE_CHECKING:
    from lepton_edge.analysis.snapshots import SnapshotStore
    from lepton_edge.sinks.http import Overlay
    from lepton_edge.sinks.metrics import MetricsServer

log = logging.getLogger(__name__)

# Seconds without a heartbeat from the inference loop after which /healthz says 503.
WEDGED_AFTER = 10.0

# Settings SIGHUP can apply to a running daemon; a change anywhere else needs a restart.
RELOADABLE = {"cameras", "thresholds", "classes", "log_level"}


@dataclass
class RunSummary:
    seconds: float
    frames: dict[str, int]
    detections: dict[str, int]
    failed: dict[str, str]
    latency: dict[str, dict[str, float]]

    @property
    def total_frames(self) -> int:
        return sum(self.frames.values())

    @property
    def fps(self) -> float:
        return self.total_frames / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        lines = [f"summary: {self.total_frames} frames in {self.seconds:.1f} s "
                 f"({self.fps:.1f} fps)"]
        for cam, n in self.frames.items():
            lines.append(f"  camera {cam}: {n} frames"
                         + (f", FAILED: {self.failed[cam]}" if cam in self.failed else ""))
        dets = ", ".join(f"{k} {v}" for k, v in sorted(self.detections.items(),
                                                      key=lambda kv: -kv[1]))
        lines.append(f"  detections: {dets or 'none'}")
        lines += format_latency(self.latency)
        return "\n".join(lines)


class Daemon:
    """Runs one `ResolvedRun` (`lepton_edge.run.resolve_run`): never a path; SIGHUP re-reads
    the run's config file through `run.reread()`."""

    def __init__(self, run: ResolvedRun, notifier: SystemdNotifier | None = None, *,
                 on_frame: OnFrame | None = None) -> None:
        self.resolved = run
        self.on_frame = on_frame  # called inline for every published frame (annotate)
        self.notifier = notifier or SystemdNotifier()
        self.config: Config = run.config
        self.artifact: Artifact = run.artifact
        self.backend: Backend | None = None
        self.pipeline: Pipeline | None = None
        self.publisher: Publisher | None = None
        self.metrics: MetricsServer | None = None
        self._ctx: zmq.Context | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._stopping_sent = False
        self._wd_interval = self.notifier.watchdog_interval()
        self._wd_last = 0.0
        self._last_beat = time.monotonic()
        self.snapshots: SnapshotStore | None = None
        self.summary: RunSummary | None = None

    # ------------------------------------------------------------------ build / teardown

    def build(self) -> Pipeline:
        run = self.resolved
        config = self.config = run.config
        logs.set_level(config.log_level)
        configure_ffmpeg()
        configure_opencv()
        artifact = self.artifact = run.artifact
        decode = run.decode
        backend = self.backend = create_backend(run.backend, artifact, run.backend_options)
        backend.open()
        fixed = backend.input.fixed_hw
        self._warm_up(backend, fixed or (config.input_size, config.input_size))
        if any(c.analysed for c in config.cameras):
            from lepton_edge.analysis.snapshots import SnapshotStore

            self.snapshots = SnapshotStore.in_state_dir(run.backend_options.state_dir,
                                                        config.snapshots)
        self._ctx = zmq.Context()
        publisher = self.publisher = Publisher(self._ctx, config.publish, config.resolve)
        with run.naming("publish.endpoint"):  # a bind error names the file line or --endpoint
            publisher.open()
        only_files = all(c.mode in ("bench", "replay") and (not c.loop or c.max_frames is not None)
                         for c in config.cameras)
        settings = PipelineSettings(
            model_name=artifact.name, precision=backend.precision, family=artifact.family,
            labels=artifact.classes, decode=decode, input_size=config.input_size,
            stride=artifact.input.stride, fixed_hw=fixed,
            health_interval=config.publish.health_interval, exit_when_done=only_files,
        )
        self.pipeline = Pipeline(backend, self._sinks(config, publisher), settings,
                                 on_heartbeat=self._heartbeat,
                                 subscribers=publisher.poll_subscriptions)
        if self.metrics is not None:
            self.metrics.start()  # after the pipeline exists: a scrape may come at once
        return self.pipeline

    def _sinks(self, config: Config, publisher: Publisher) -> list[Sink]:
        """Every sink of this run, in the order each frame reaches them."""
        sinks: list[Sink] = [ZmqSink(publisher)]
        if self.resolved.options.record is not None:
            sinks.append(RecorderSink(self.resolved.options.record))
        if config.metrics is not None:
            from lepton_edge.sinks.metrics import MetricsServer

            assert self.artifact is not None and self.backend is not None
            metrics = self.metrics = MetricsServer(config.metrics, health=self._metrics_health,
                                                   build={"model": self.artifact.name,
                                                          "backend": self.backend.name,
                                                          "precision": self.backend.precision})
            sinks.append(CallbackSink(lambda r, _p: metrics.observe(
                r.camera, r.labels, r.detections.class_id, r.latency_ms), name="metrics"))
        cameras = [c.id for c in config.cameras]
        if config.mqtt is not None:
            from lepton_edge.sinks.mqtt import MqttSink

            state = self.resolved.backend_options.state_dir
            logs = {c.id: state / c.inspect.log.path for c in config.cameras  # build_station's
                    if c.inspect is not None and state is not None}
            sinks.append(MqttSink(config.mqtt, cameras=cameras, zones=self._zones(config),
                                  resolve=config.resolve, verdict_logs=logs))
        if config.http is not None:
            from lepton_edge.sinks.http import HttpSink

            assert self.artifact is not None
            sinks.append(HttpSink(config.http, overlays=self._overlays(config),
                                  healthy=self.healthy, detect=self._detect,
                                  labels=self.artifact.classes,
                                  snapshot_path=self._snapshot_path, cameras=cameras,
                                  resolve=config.resolve))
        if self.on_frame is not None:
            sinks.append(CallbackSink(self.on_frame))
        return sinks

    @staticmethod
    def _zones(config: Config) -> dict[str, list[str]]:
        return {c.id: [z.id for z in c.zones] for c in config.cameras}

    @staticmethod
    def _overlays(config: Config) -> dict[str, Overlay]:
        from lepton_edge.sinks.http import Overlay

        return {c.id: Overlay(zones={z.id: z.polygon for z in c.zones},
                              lines={ln.id: ln.points for ln in c.lines})
                for c in config.cameras if c.zones or c.lines}

    def _snapshot_path(self, name: str) -> Path | None:
        return self.snapshots.path(name) if self.snapshots is not None else None

    def _analyser(self, cam: Camera) -> CameraAnalyser | None:
        """The analysing stage of one camera: its inspection station (`inspect:`), its security
        analyser where it has any of those keys, else none (every frame inferred, published as
        decoded)."""
        assert self.pipeline is not None and self.artifact is not None
        if cam.inspect is not None:
            from lepton_edge.analysis.inspection.station import build_station

            return build_station(cam.id, cam.inspect, self.pipeline.emitter.emit,
                                 self.resolved.backend_options.state_dir,
                                 labels=self.artifact.classes)
        if not cam.analysed:
            return None
        from lepton_edge.analysis.security import build_security_analyser

        return build_security_analyser(cam.id, cam, self.pipeline.emitter.emit, self.snapshots,
                                       self.artifact.classes)

    def healthy(self) -> bool:
        """False when the pipeline is wedged: no heartbeat from the inference loop for
        `WEDGED_AFTER` seconds (idle cameras still beat), or a stage failed."""
        p = self.pipeline
        return (p is not None and p.error is None
                and time.monotonic() - self._last_beat < WEDGED_AFTER)

    def _detect(self, image: np.ndarray) -> Detections:
        if self.pipeline is None:
            raise RuntimeError("the pipeline is not running")
        return self.pipeline.detect(image)

    @staticmethod
    def _warm_up(backend: Backend, hw: tuple[int, int]) -> None:
        """One inference on a gray frame: proves the model runs here before READY=1, and takes
        the runtime's first-call costs off the first camera frame."""
        t0 = time.perf_counter()
        spec = backend.input
        tensor = padded_buffer(*hw, spec.dtype, spec.layout)
        backend.submit(tensor).wait()
        log.info("warm-up inference at %dx%d: %.0f ms", hw[1], hw[0],
                 (time.perf_counter() - t0) * 1000)

    def _metrics_health(self) -> HealthMessage:
        assert self.pipeline is not None
        return self.pipeline.health("running")

    def _start_sources(self, cameras: tuple[Camera, ...]) -> None:
        assert self.pipeline is not None and self.config is not None
        for cam in cameras:
            self.pipeline.add_source(Source(cam, self.config.camera_url(cam),
                                            self.pipeline.condition), self._analyser(cam))

    def teardown(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self.publisher is not None:
            self.publisher.close()  # safe twice: the zmq sink closed it with the pipeline
        if self.backend is not None:
            self.backend.close()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # ------------------------------------------------------------------ run

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        install_signals = threading.current_thread() is threading.main_thread()
        if install_signals:
            signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
            signal.signal(signal.SIGINT, lambda *_: self.request_stop())
            signal.signal(signal.SIGHUP, lambda *_: self._reload.set())
        try:
            pipeline = self.build()
            assert self.config is not None and self.publisher is not None
            wait = self.resolved.options
            if wait.wait_subscribers:
                ok = self.publisher.wait_for_subscribers(wait.wait_subscribers, wait.wait_timeout)
                if not ok:
                    log.warning("no subscriber after %.0f s; starting anyway", wait.wait_timeout)
            pipeline.start()
            self._start_sources(self.config.cameras)
            # The model loaded and ran (warm-up): the service is up even while a camera is
            # down at boot; camera states are on the health topic and in STATUS.
            self.notifier.ready()
            return self._supervise(pipeline)
        finally:
            if not self._stopping_sent:
                self.notifier.stopping()
            self.teardown()

    def request_stop(self) -> None:
        self._stop.set()

    def _supervise(self, pipeline: Pipeline) -> int:
        first = False
        next_status = 0.0
        t_start = time.monotonic()
        while not self._stop.is_set():
            if pipeline.finished.wait(0.2):
                break
            if not first and pipeline.stats.first_result.is_set():
                first = True
                log.info("first frame published")
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            now = time.monotonic()
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + 5.0
        self._stopping_sent = True
        self.notifier.stopping()
        drained = pipeline.stop()
        if pipeline.error is not None:
            raise pipeline.error
        if not drained:
            return 1  # a hung pipeline: let Restart=on-failure bring up a fresh process
        self.summary = self._summarize(time.monotonic() - t_start)
        if self.summary.failed and pipeline.settings.exit_when_done:
            return 4
        return 0

    def _heartbeat(self) -> None:
        """Called by the inference loop every iteration; feeds the systemd watchdog."""
        self._last_beat = time.monotonic()
        if self._wd_interval is None or self._stopping_sent:
            return  # no WATCHDOG after STOPPING: the drain is not progress systemd waits on
        now = time.monotonic()
        if now - self._wd_last >= self._wd_interval:
            self._wd_last = now
            self.notifier.watchdog()

    def status_line(self) -> str:
        p = self.pipeline
        if p is None:
            return "starting"
        states = ", ".join(f"{cid} {st.value}" for cid, st in p.camera_states().items())
        return f"{p.fps:.1f} fps; {states}"

    def _summarize(self, seconds: float) -> RunSummary:
        assert self.pipeline is not None and self.artifact is not None
        p = self.pipeline
        failed = {s.id: s.stats().last_error or "failed" for s in p.sources()
                  if s.state == State.FAILED}
        return RunSummary(seconds=seconds,
                          frames={k: c.published for k, c in p.stats.cameras.items()},
                          detections=p.stats.detections_by_label(self.artifact.classes),
                          failed=failed, latency=p.stats.latency.summary())

    # ------------------------------------------------------------------ SIGHUP

    def _refuse_restart_changes(self, new: Config) -> None:
        changed = [k for k in Config.model_fields if k not in RELOADABLE | {"source"}
                   and getattr(new, k) != getattr(self.config, k)]
        if changed:
            raise ConfigError(f"{', '.join(changed)} changed: that needs a restart "
                              f"(systemctl restart lepton-edge)")

    def reload(self) -> bool:
        """Apply the config file again. Returns False (and keeps the old config) when refused."""
        assert self.config is not None and self.pipeline is not None
        self.notifier.reloading()
        try:
            # the same resolve_run the start went through
            new_run = self.resolved.reread(check=self._refuse_restart_changes)
            new = new_run.config
            decode = new_run.decode
        except LeptonError as err:
            log.error("reload refused, the running config stays: %s", err)
            self.notifier.ready()
            return False
        old = {c.id: c for c in self.config.cameras}
        fresh = {c.id: c for c in new.cameras}
        for cid, cam in old.items():
            if cid not in fresh or fresh[cid] != cam:
                log.info("reload: stopping camera %s", cid)
                self.pipeline.remove_source(cid)
        self.config = new
        self.resolved = new_run
        added = [c for cid, c in fresh.items() if cid not in old or old[cid] != c]
        for cam in added:
            log.info("reload: starting camera %s", cam.id)
        self._start_sources(tuple(added))
        self.pipeline.set_decode_settings(decode)
        logs.set_level(new.log_level)
        log.info("reload: applied (%d cameras)", len(new.cameras))
        self.notifier.ready()
        return True


def main_run(run: ResolvedRun, *,
             on_frame: OnFrame | None = None) -> int:
    daemon = Daemon(run, on_frame=on_frame)
    code = daemon.run()
    if daemon.summary is not None and daemon.pipeline is not None \
            and daemon.pipeline.settings.exit_when_done:
        print(daemon.summary.format(), file=sys.stderr)
    return code
