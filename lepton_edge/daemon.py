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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import zmq

from . import logs
from .artifact import Artifact, load_artifact
from .backends import create_backend
from .backends.base import Backend, BackendOptions
from .config import Camera, Config, load_config
from .decode import DecodeSettings
from .detections import Detections
from .errors import ConfigError, LeptonError
from .messages import HealthMessage
from .notify import SystemdNotifier
from .pipeline import Pipeline, PipelineSettings
from .preprocess import configure_opencv, padded_buffer
from .publish import Publisher
from .sources import Frame, Source, State, configure_ffmpeg

if TYPE_CHECKING:
    from .metrics import MetricsServer

log = logging.getLogger(__name__)

# Settings SIGHUP can apply to a running daemon; a change anywhere else needs a restart.
RELOADABLE = {"cameras", "thresholds", "classes", "log_level"}


@dataclass
class RunOptions:
    """Command-line overrides and extras for one run."""

    endpoint: str | None = None
    record: Path | None = None
    wait_subscribers: int = 0
    wait_timeout: float = 10.0
    on_result: Callable[[Frame, Detections, bytes], None] | None = None
    overrides: dict[str, object] = field(default_factory=dict)


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
        for stage in ("capture", "preprocess", "infer", "decode", "publish", "capture_to_publish"):
            if stage in self.latency:
                s = self.latency[stage]
                lines.append(f"  {stage:>18}: p50 {s['p50']:7.2f} ms   p99 {s['p99']:7.2f} ms")
        return "\n".join(lines)


def decode_settings(config: Config, artifact: Artifact) -> DecodeSettings:
    class_ids = None
    if config.classes is not None:
        index = {name: i for i, name in enumerate(artifact.classes)}
        unknown = [c for c in config.classes if c not in index]
        if unknown:
            raise ConfigError(f"classes: {', '.join(map(repr, unknown))} not among the classes of "
                              f"model {artifact.name} ({', '.join(artifact.classes[:10])}, ...)")
        class_ids = tuple(index[c] for c in config.classes)
    t = config.thresholds
    return DecodeSettings(score=t.score, iou=t.iou, max_detections=t.max_detections,
                          class_ids=class_ids)


def backend_options(config: Config) -> BackendOptions:
    from .backends.tensorrt.engine_cache import default_state_dir

    state = config.resolve(config.state_dir) if config.state_dir else default_state_dir()
    return BackendOptions(precision=config.precision, threads=config.threads,
                          device=config.device, state_dir=state, input_size=config.input_size,
                          extra={k: str(v) for k, v in config.backend_options.items()})


class Daemon:
    def __init__(self, config_path: str | Path, options: RunOptions | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config_path = Path(config_path)
        self.options = options or RunOptions()
        self.notifier = notifier or SystemdNotifier()
        self.config: Config | None = None
        self.artifact: Artifact | None = None
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
        self.summary: RunSummary | None = None

    # ------------------------------------------------------------------ build / teardown

    def build(self) -> Pipeline:
        config = self.config = load_config(self.config_path, self.options.overrides)
        logs.set_level(config.log_level)
        configure_ffmpeg()
        configure_opencv()
        artifact = self.artifact = load_artifact(config.resolve(config.model))
        decode = decode_settings(config, artifact)
        backend = self.backend = create_backend(config.backend, artifact, backend_options(config))
        backend.open()
        fixed = backend.input.fixed_hw
        self._warm_up(backend, fixed or (config.input_size, config.input_size))
        self._ctx = zmq.Context()
        publisher = self.publisher = Publisher(self._ctx, config.publish,
                                               endpoint=self.options.endpoint,
                                               record=self.options.record)
        publisher.open()
        only_files = all(c.mode in ("bench", "replay") and (not c.loop or c.max_frames is not None)
                         for c in config.cameras)
        settings = PipelineSettings(
            model_name=artifact.name, precision=backend.precision, family=artifact.family,
            labels=artifact.classes, decode=decode, input_size=config.input_size,
            stride=artifact.input.stride, fixed_hw=fixed,
            health_interval=config.publish.health_interval, exit_when_done=only_files,
        )
        on_result = self.options.on_result
        if config.metrics is not None:
            from .metrics import MetricsServer

            self.metrics = MetricsServer(config.metrics, health=self._metrics_health,
                                         send_errors=lambda: publisher.send_errors)
            on_result = self.metrics.wrap(on_result)
        self.pipeline = Pipeline(backend, publisher, settings, on_heartbeat=self._heartbeat,
                                 on_result=on_result)
        if self.metrics is not None:
            self.metrics.start()  # after the pipeline exists: a scrape may come at once
        return self.pipeline

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
                                            self.pipeline.condition))

    def teardown(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.metrics is not None:
            self.metrics.close()
        if self.publisher is not None:
            self.publisher.close()
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
            if self.options.wait_subscribers:
                ok = self.publisher.wait_for_subscribers(self.options.wait_subscribers,
                                                         self.options.wait_timeout)
                if not ok:
                    log.warning("no subscriber after %.0f s; starting anyway",
                                self.options.wait_timeout)
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
            if not first and pipeline.first_result.is_set():
                first = True
                log.info("first frame published")
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            now = time.monotonic()
            if now >= next_status:
                self.notifier.status(self.status_line())
                next_status = now + 5.0
        self.notifier.stopping()
        self._stopping_sent = True
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
        if self._wd_interval is None:
            return
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
        labels = self.artifact.classes
        dets: dict[str, int] = {}
        for c in p.counters.values():
            for cls, n in c.detections.items():
                name = labels[cls] if cls < len(labels) else str(cls)
                dets[name] = dets.get(name, 0) + n
        failed = {s.id: s.stats().last_error or "failed" for s in p.sources()
                  if s.state == State.FAILED}
        return RunSummary(seconds=seconds, frames={k: c.published for k, c in p.counters.items()},
                          detections=dets, failed=failed, latency=p.latency.summary())

    # ------------------------------------------------------------------ SIGHUP

    def reload(self) -> bool:
        """Apply the config file again. Returns False (and keeps the old config) when refused."""
        assert self.config is not None and self.pipeline is not None
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, self.options.overrides)
            changed = [k for k in Config.model_fields
                       if k not in RELOADABLE | {"source"}
                       and getattr(new, k) != getattr(self.config, k)]
            if changed:
                raise ConfigError(f"{', '.join(changed)} changed: that needs a restart "
                                  f"(systemctl restart lepton-edge)")
            assert self.artifact is not None
            decode = decode_settings(new, self.artifact)
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
        added = [c for cid, c in fresh.items() if cid not in old or old[cid] != c]
        for cam in added:
            log.info("reload: starting camera %s", cam.id)
        self._start_sources(tuple(added))
        self.pipeline.set_decode_settings(decode)
        logs.set_level(new.log_level)
        log.info("reload: applied (%d cameras)", len(new.cameras))
        self.notifier.ready()
        return True


def main_run(config: str, options: RunOptions) -> int:
    daemon = Daemon(config, options)
    code = daemon.run()
    if daemon.summary is not None and daemon.pipeline is not None \
            and daemon.pipeline.settings.exit_when_done:
        print(daemon.summary.format(), file=sys.stderr)
    return code
