"""The aiohttp application: routes of the HTTP API and the live page. It only reads the
`LiveState` the sink fills; JPEG encoding and detection run on worker threads, never on the
event loop."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    from aiohttp import web
except ImportError:  # the `http` extra is not installed: HttpSink.open() says so
    web = None  # type: ignore[assignment]

from lepton_edge.detections import Detections
from lepton_edge.messages import HealthMessage
from lepton_edge.sinks.http.config import HttpConfig
from lepton_edge.sinks.http.detection import (
    BadRequest,
    decode_image,
    parse_min_confidence,
    predictions,
)
from lepton_edge.sinks.http.events import EventLog
from lepton_edge.sinks.http.frames import FrameStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
BOUNDARY = "lepton-frame"
Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


@dataclass
class LiveState:
    """What the routes serve; filled by the sink from the pipeline's thread."""

    config: HttpConfig
    frames: FrameStore
    events: EventLog
    labels: Sequence[str] = ()
    healthy: Callable[[], bool] = lambda: True
    detect: Callable[[np.ndarray], Detections] | None = None
    snapshot_path: Callable[[str], Path | None] | None = None
    cameras: frozenset[str] = frozenset()  # configured: known before their first frame
    token: str | None = None
    health: HealthMessage | None = None
    started: float = field(default_factory=time.time)
    encode_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="http-jpeg"))
    detect_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="http-detect"))
    closing: bool = False


def build_app(state: LiveState) -> web.Application:
    app = web.Application(middlewares=[_auth(state)],
                          client_max_size=int(state.config.max_upload_mb * 1024 * 1024))
    r = Routes(state)
    app.router.add_get("/", r.index)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/healthz", r.healthz)
    app.router.add_get("/api/health", r.health)
    app.router.add_get("/api/cameras", r.cameras)
    app.router.add_get("/api/cameras/{id}/latest.jpg", r.latest)
    app.router.add_get("/api/cameras/{id}/mjpeg", r.mjpeg)
    app.router.add_get("/api/events", r.events)
    app.router.add_get("/api/events/{id}/snapshot.jpg", r.snapshot)
    app.router.add_get("/api/verdicts", r.verdicts)
    app.router.add_post("/v1/vision/detection", r.detection)
    return app


_OPEN = ("/", "/healthz")  # the page (it asks for the token) and the liveness probe


def _auth(state: LiveState) -> Any:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if state.token is None or request.path in _OPEN or request.path.startswith("/static/"):
            return await handler(request)
        given = request.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), state.token.encode()):
            return web.json_response(
                {"success": False, "error": "missing or wrong bearer token (send "
                 "'Authorization: Bearer <token>' or ?token=<token>)"}, status=401)
        return await handler(request)
    return check


def _not_found(what: str) -> web.Response:
    return web.json_response({"success": False, "error": what}, status=404)


class Routes:
    def __init__(self, state: LiveState) -> None:
        self.s = state

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def healthz(self, _request: web.Request) -> web.Response:
        ok = self.s.healthy()
        return web.json_response({"status": "ok" if ok else "wedged"}, status=200 if ok else 503)

    async def health(self, _request: web.Request) -> web.Response:
        h = self.s.health
        body: dict[str, Any] = {"ok": self.s.healthy(), "health": None}
        if h is not None:
            body["health"] = {"ts": h.ts, "state": h.state, "uptime_s": round(h.uptime_s, 1),
                              "fps": round(h.fps, 2), "subscribers": h.subscribers}
        return web.json_response(body)

    async def cameras(self, _request: web.Request) -> web.Response:
        return web.json_response({"cameras": self._cameras()})

    def _cameras(self) -> list[dict[str, Any]]:
        health = {c.id: c for c in (self.s.health.cameras if self.s.health else ())}
        out = []
        for cam in sorted(self._known()):
            c, r = health.get(cam), self.s.frames.newest(cam)
            ov = self.s.frames.overlay(cam)
            out.append({
                "id": cam, "state": c.state if c else "unknown", "fps": round(c.fps, 2) if c
                else None, "frames": c.frames if c else None, "dropped": c.dropped if c else None,
                "reconnects": c.reconnects if c else None, "last_error": c.last_error if c
                else None, "seq": r.seq if r else None, "ts": r.ts if r else None,
                "width": r.width if r else None, "height": r.height if r else None,
                "objects": len(r.detections) if r else 0,
                "zones": {k: [list(p) for p in v] for k, v in ov.zones.items()} if ov else {},
                "lines": {k: [list(p) for p in v] for k, v in ov.lines.items()} if ov else {},
                "latest": f"/api/cameras/{cam}/latest.jpg", "mjpeg": f"/api/cameras/{cam}/mjpeg",
            })
        return out

    async def latest(self, request: web.Request) -> web.Response:
        cam = request.match_info["id"]
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(self.s.encode_pool, self.s.frames.jpeg, cam, None)
        if got is None:
            return _not_found(f"camera {cam!r} has no frame yet (or is not configured)")
        seq, data = got
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store", "X-Frame-Seq": str(seq)})

    async def mjpeg(self, request: web.Request) -> web.StreamResponse:
        """multipart/x-mixed-replace at most `mjpeg_fps`, at most `mjpeg_width` wide; a frame
        is sent once (a camera that stalls sends nothing new)."""
        cam = request.match_info["id"]
        if cam not in self._known():
            return _not_found(f"camera {cam!r} is not known")
        cfg = self.s.config
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            "Cache-Control": "no-store"})
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        interval, last = 1.0 / cfg.mjpeg_fps, -1
        while not self.s.closing:
            t0 = loop.time()
            newest = self.s.frames.newest(cam)
            if newest is not None and newest.seq != last:
                got = await loop.run_in_executor(self.s.encode_pool, self.s.frames.jpeg, cam,
                                                 cfg.mjpeg_width)
                if got is not None:
                    last, data = got
                    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(data)}\r\n\r\n").encode()
                    try:
                        await resp.write(head + data + b"\r\n")
                    except (ConnectionError, RuntimeError):
                        break  # the viewer went away
            await asyncio.sleep(max(0.005, interval - (loop.time() - t0)))
        return resp

    def _known(self) -> set[str]:
        health = {c.id for c in (self.s.health.cameras if self.s.health else ())}
        return set(self.s.cameras) | health | set(self.s.frames.cameras())

    async def events(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(1000, int(request.query.get("limit", "50"))))
        except ValueError:
            return web.json_response({"success": False, "error": "limit must be an integer"},
                                     status=400)
        items = self.s.events.recent(request.query.get("camera"), limit)
        out = [{**e, "snapshot_url": (f"/api/events/{e['event_id']}/snapshot.jpg"
                                      if e.get("snapshot") else None)} for e in items]
        return web.json_response({"events": out})

    async def verdicts(self, request: web.Request) -> web.Response:
        return web.json_response({"verdicts": self.s.events.verdicts(request.query.get("camera"))})

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        event_id = request.match_info["id"]
        name = self.s.events.snapshot_name(event_id)
        if name is None or self.s.snapshot_path is None:
            return _not_found(f"event {event_id!r} has no snapshot (or is no longer recent)")
        if "/" in name or "\\" in name or name.startswith("."):
            return _not_found(f"event {event_id!r}: snapshot name {name!r} is not a file name")
        path = self.s.snapshot_path(name)
        if path is None or not path.is_file():
            return _not_found(f"event {event_id!r}: snapshot {name!r} is gone")
        return web.FileResponse(path, headers={"Cache-Control": "max-age=3600"})

    async def detection(self, request: web.Request) -> web.Response:
        if self.s.detect is None:
            return _not_found("detection is not served by this daemon")
        try:
            img, min_conf = await _read_upload(request)
        except BadRequest as err:
            return web.json_response({"success": False, "error": str(err), "code": 400},
                                     status=400)
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            dets = await loop.run_in_executor(self.s.detect_pool, self.s.detect, img)
        except Exception as err:
            log.exception("http: detection failed")
            return web.json_response({"success": False, "error": f"detection failed: {err}",
                                      "code": 500}, status=500)
        ms = (time.perf_counter() - t0) * 1000
        return web.json_response(predictions(dets, self.s.labels, min_conf, ms))


async def _read_upload(request: web.Request) -> tuple[np.ndarray, float]:
    ctype = request.content_type
    if ctype not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise BadRequest(f"expected a multipart/form-data upload with the field 'image', got "
                         f"Content-Type {ctype or 'none'!r}")
    try:
        form = await request.post()
    except ValueError as err:
        raise BadRequest(f"the form cannot be parsed ({err})") from None
    field_ = form.get("image")
    if field_ is None:
        raise BadRequest(f"no form field 'image' (got {sorted(form)[:10]})")
    data = field_.file.read() if isinstance(field_, web.FileField) else str(field_).encode()
    min_conf = form.get("min_confidence")
    return decode_image(data), parse_min_confidence(None if min_conf is None else str(min_conf))
