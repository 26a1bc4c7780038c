"""`HttpSink`: the HTTP API and the live page as a sink. `frame` keeps the newest result per
camera (O(1); drawing and JPEG encoding happen later, on a server thread, once per frame);
`outcome` lists events and verdicts; `health` keeps the figures. The aiohttp server runs its
own event loop on its own thread, started by `open` and stopped by `close`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.errors import BackendUnavailableError, ConfigError
from lepton_edge.messages import HealthMessage
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.http.app import LiveState, build_app
from lepton_edge.sinks.http.config import HttpConfig
from lepton_edge.sinks.http.events import EventLog
from lepton_edge.sinks.http.frames import FrameStore, Overlay

log = logging.getLogger(__name__)


class HttpSink:
    """`overlays`: camera id -> its zones and lines to draw. `healthy`: False when the pipeline
    is wedged (`/healthz` answers 503). `detect`: the daemon's backend for
    `POST /v1/vision/detection` (BGR image -> Detections in its pixels), with `labels` naming
    class ids; None turns the route off. `snapshot_path`: event snapshot file name -> its path
    (None when gone). `cameras`: the configured camera ids (listed, and their streams wait,
    before their first frame). `resolve`: the config's file paths to paths (`Config.resolve`)."""

    name = "http"

    def __init__(self, config: HttpConfig, *, overlays: Mapping[str, Overlay] | None = None,
                 healthy: Callable[[], bool] = lambda: True,
                 detect: Callable[[np.ndarray], Detections] | None = None,
                 labels: Sequence[str] = (),
                 snapshot_path: Callable[[str], Path | None] | None = None,
                 cameras: Sequence[str] = (),
                 resolve: Callable[[str], Path] = Path) -> None:
        self.config = config
        self._resolve = resolve
        self.state = LiveState(config=config,
                               frames=FrameStore(overlays, quality=config.jpeg_quality),
                               events=EventLog(config.events), labels=tuple(labels),
                               healthy=healthy, detect=detect, snapshot_path=snapshot_path,
                               cameras=frozenset(cameras) | frozenset(overlays or ()))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    # ---------------------------------------------------------------- the Sink protocol

    def open(self) -> None:
        if self._thread is not None:
            return
        from lepton_edge.sinks.http import app

        if app.web is None:
            raise BackendUnavailableError("http: needs aiohttp; install the extra: "
                                          "pip install 'lepton-edge[http]'")
        self.state.token = self._token()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(ready, failure),
                                        name="sink-http", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread.join(5)
            self._thread = None
            err = failure[0]
            raise ConfigError(f"http: cannot listen on {self.config.host}:{self.config.port} "
                              f"({err}); set http.port to a free port or http.host to an "
                              f"address of this machine") from err
        log.info("http: serving the API and the live page on %s%s", self.url,
                 " (bearer token required)" if self.state.token else "")

    def frame(self, result: FrameResult, payload: bytes) -> None:
        self.state.frames.put(result)

    def outcome(self, outcome: Outcome) -> None:
        self.state.events.add(outcome.topic, outcome.to_payload())

    def health(self, health: HealthMessage) -> None:
        self.state.health = health

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self.state.closing = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        self.state.encode_pool.shutdown(wait=False, cancel_futures=True)
        self.state.detect_pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- the server's thread

    def _token(self) -> str | None:
        if self.config.token_file is None:
            return None
        path = self._resolve(self.config.token_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as err:
            raise ConfigError(f"http.token_file: cannot read {path} ({err.strerror}); write "
                              f"the bearer token on its first line") from err
        token = lines[0].strip() if lines else ""
        if len(token) < 16:
            raise ConfigError(f"http.token_file: {path}: the token must be at least 16 "
                              f"characters (got {len(token)})")
        return token

    def _serve(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(ready, failure))
        finally:
            ready.set()
            loop.close()

    async def _main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        from aiohttp import web

        self._stop = asyncio.Event()
        runner = web.AppRunner(build_app(self.state), access_log=None, shutdown_timeout=2)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except OSError as err:
            failure.append(err)
            await runner.cleanup()
            return
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        ready.set()
        await self._stop.wait()
        await runner.cleanup()
