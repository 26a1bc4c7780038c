"""The live page in headless Chromium (Debian's `chromium`), driven over the DevTools protocol:
it loads, the MJPEG image decodes to non-blank pixels, and the events list fills while frames
of vtest.avi (with their real detections) are fed to the sink. A screenshot is saved."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pytest

pytest.importorskip("aiohttp", reason="needs aiohttp (pip install 'lepton-edge[http]')")
import aiohttp

from lepton_edge.messages import CameraHealth, HealthMessage
from lepton_edge.sinks.http import HttpConfig, HttpSink, Overlay
from tests.sinks.conftest import event

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,900"]

PROBE = (Path(__file__).parent / "live_page_probe.js").read_text()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs Debian's chromium (scripts/install-system-deps.sh)")


class Feeder(threading.Thread):
    """Replays the real frames into the sink at ~10 fps with events (and snapshots) from
    their detections, until stopped."""

    def __init__(self, sink: HttpSink, results, snaps: Path) -> None:
        super().__init__(daemon=True)
        self.sink, self.results, self.snaps = sink, results, snaps
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            r = self.results[i % len(self.results)]
            self.sink.frame(r, b"")
            if i % 3 == 0 and len(r.detections):
                box = [round(v, 1) for v in r.detections.xyxy[0].tolist()]
                name = f"ev{i}.jpg"
                x1, y1, x2, y2 = (max(0, int(v)) for v in box)
                cv2.imwrite(str(self.snaps / name), r.image[y1:y2, x1:x2])
                self.sink.outcome(event("plaza", i, kind="start", box=box, snapshot=name,
                                        label=r.label(int(r.detections.class_id[0])),
                                        zones=["door"] if i % 2 else []))
            self.sink.health(HealthMessage(
                ts=time.time(), state="running", uptime_s=i / 10, fps=10.0, subscribers=0,
                cameras=(CameraHealth("plaza", "connected", 10.0, i, 0, 0, i),)))
            i += 1
            time.sleep(0.1)


async def _drive(devtools_port: int, url: str, shot: Path) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{devtools_port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1_000_000))

            async def call(method: str, **params):
                n = next(ids)
                await ws.send_json({"id": n, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive(timeout=60)).data)
                    if msg.get("id") == n:
                        assert "error" not in msg, msg
                        return msg["result"]

            await call("Page.enable")
            await call("Page.navigate", url=url)
            got = await call("Runtime.evaluate", expression=PROBE, awaitPromise=True,
                             returnByValue=True, timeout=45000)
            await asyncio.sleep(0.5)
            png = await call("Page.captureScreenshot", format="png")
            shot.write_bytes(base64.b64decode(png["data"]))
            return got["result"].get("value", got)


def test_live_page_in_headless_chromium(tmp_path, vtest_results) -> None:
    chromium = _chromium()
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    sink = HttpSink(HttpConfig(port=0, mjpeg_fps=5, mjpeg_width=640),
                    overlays={"plaza": Overlay(
                        zones={"door": [(60, 330), (330, 330), (330, 560), (60, 560)]},
                        lines={"gate": [(420, 150), (740, 420)]})},
                    snapshot_path=lambda name: snaps / name)
    sink.open()
    feeder = Feeder(sink, vtest_results, snaps)
    feeder.start()
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             "--remote-debugging-port=0", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        assert port_file.exists(), "chromium did not open its DevTools port within 60 s"
        devtools_port = int(port_file.read_text().split()[0])
        shot = Path(os.environ.get("LEPTON_SCREENSHOT_DIR", tmp_path)) / "live-page.png"
        got = asyncio.run(_drive(devtools_port, sink.url + "/", shot))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        feeder.stop.set()
        feeder.join(5)
        sink.close()
    print(f"screenshot: {shot}; page: {got}")
    assert "error" not in got, got
    assert (got["width"], got["height"]) == (640, 480)  # the capped MJPEG width
    assert got["std"] > 20 and 20 < got["mean"] < 235, f"blank-looking frame: {got}"
    assert got["items"] >= 3 and got["snapshots"] >= 1, got
    assert got["state"] == "running" and got["fps"] == "10.0", got
    assert shot.stat().st_size > 10_000
