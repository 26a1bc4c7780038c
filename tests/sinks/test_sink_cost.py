"""What the integrations cost the pipeline: real inference on vtest.avi feeding the MQTT bridge
(a real Mosquitto with a subscriber on everything) and the HTTP sink (three MJPEG viewers: curl
processes, as browsers would be, so their reading costs this process nothing), in
alternating blocks with and without them attached, same run. Prints the figures; run with -s
to read them."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

import cv2
import pytest

pytest.importorskip("paho.mqtt", reason="needs paho-mqtt (pip install 'lepton-edge[mqtt]')")
pytest.importorskip("aiohttp", reason="needs aiohttp (pip install 'lepton-edge[http]')")

from lepton_edge.results import FrameResult
from lepton_edge.sinks.http import HttpConfig, HttpSink, Overlay
from lepton_edge.sinks.mqtt import MqttConfig, MqttSink
from tests.conftest import VTEST
from tests.sinks.conftest import events_from
from tests.sinks.test_mqtt import Subscriber

BLOCK = 10  # frames per block
BLOCKS = 8  # of each kind, interleaved (a shared machine's load drifts between blocks)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


@pytest.mark.slow
def test_three_viewers_and_a_subscriber_cost(broker_factory, detector, labels,
                                             tmp_path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl for the MJPEG viewers")
    broker = broker_factory()
    mqtt = MqttSink(MqttConfig(host="127.0.0.1", port=broker.port), cameras=["plaza"])
    http = HttpSink(HttpConfig(port=0, mjpeg_fps=5, mjpeg_width=640), cameras=["plaza"],
                    overlays={"plaza": Overlay({"door": [(60, 330), (330, 330), (330, 560)]},
                                               {})})
    mqtt.open()
    http.open()
    sub = Subscriber(broker.port, "#")
    cap = cv2.VideoCapture(str(VTEST))
    feed_ms: list[float] = []
    fps: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # this process's CPU ms per frame
    seq = 0
    viewers: list[subprocess.Popen[bytes]] = []
    split: tuple[list[float], list[float]] = ([], [])  # mqtt.frame, http.frame
    try:
        for block in range(2 * BLOCKS):
            attached = block % 2 == 1
            if attached and not viewers:
                viewers = [subprocess.Popen(
                    ["curl", "-sN", "-o", str(tmp_path / f"viewer{i}.mjpeg"),
                     http.url + "/api/cameras/plaza/mjpeg"]) for i in range(3)]
            t0, c0 = time.perf_counter(), _cpu()
            for _ in range(BLOCK):
                ok, img = cap.read()
                assert ok
                img.setflags(write=False)
                t = time.perf_counter()
                dets = detector(img)
                r = FrameResult(camera="plaza", seq=seq, frame=seq, ts=time.time(),
                                t_capture=t, image=img, detections=dets, labels=labels,
                                latency_ms={})
                seq += 1
                if attached:
                    f0 = time.perf_counter()
                    mqtt.frame(r, b"")
                    f1 = time.perf_counter()
                    http.frame(r, b"")
                    split[0].append((f1 - f0) * 1000)
                    split[1].append((time.perf_counter() - f1) * 1000)
                    if seq % 10 == 0:
                        for e in events_from(r, r.label)[:2]:
                            mqtt.outcome(e)
                            http.outcome(e)
                    feed_ms.append((time.perf_counter() - f0) * 1000)
            fps[attached].append(BLOCK / (time.perf_counter() - t0))
            cpu[attached].append((_cpu() - c0) * 1000 / BLOCK)
    finally:
        for v in viewers:
            v.terminate()
            v.wait(10)
        cap.release()
        sub.close()
        http.close()
        mqtt.close()
    base = 2 * BLOCKS * BLOCK / 2 / sum(BLOCK / f for f in fps[False])
    with_sinks = BLOCKS * BLOCK / sum(BLOCK / f for f in fps[True])
    got = [(tmp_path / f"viewer{i}.mjpeg").read_bytes().count(b"--lepton-frame")
           for i in range(3)]
    feed_ms.sort()
    p50, p95 = feed_ms[len(feed_ms) // 2], feed_ms[int(len(feed_ms) * 0.95)]
    ratio = with_sinks / base
    cpu_base, cpu_with = statistics.median(cpu[False]), statistics.median(cpu[True])
    mean = statistics.mean(feed_ms)
    print(f"\nfps without {base:.2f} ({[round(f, 2) for f in fps[False]]}), with 3 MJPEG "
          f"viewers + MQTT subscriber {with_sinks:.2f} ({[round(f, 2) for f in fps[True]]}), "
          f"ratio {ratio:.3f}; process CPU per frame {cpu_base:.1f} ms without, {cpu_with:.1f} "
          f"ms with (+{cpu_with - cpu_base:.1f} ms); frame()+outcome() on the feeding thread "
          f"mean {mean:.3f} ms, p50 {p50:.3f} ms, "
          f"(mqtt.frame mean {statistics.mean(split[0]):.3f} max {max(split[0]):.3f}, "
          f"http.frame mean {statistics.mean(split[1]):.3f} max {max(split[1]):.3f}) "
          f"p95 {p95:.3f} ms, max {feed_ms[-1]:.3f} ms; viewers got "
          f"{got} frames; JPEG encodes {http.state.frames.encodes}; "
          f"MQTT messages seen {len(sub.messages)}")
    assert all(n > 0 for n in got), got
    # The feeding thread only hands over references; the mean and p95 include GIL waits
    # behind the sinks' threads (and the OS's scheduling, on a loaded machine): reported.
    assert p50 < 0.5, f"feeding the sinks costs {p50:.2f} ms (p50)"
    # frame() itself is one dict store per sink (no lock a sink's thread could hold).
    frame_ms = sorted(a + b for a, b in zip(*split, strict=True))
    assert frame_ms[int(len(frame_ms) * 0.99)] < 1.0, frame_ms[-5:]
    # Load-independent: what the integrations add to this process's CPU per frame (drawing,
    # one JPEG per frame, three streams, MQTT) against what inference itself takes.
    assert cpu_with - cpu_base < 0.1 * cpu_base, (cpu_base, cpu_with)
    # Wall-clock fps on a shared machine swings 2x between blocks: reported, not asserted (the
    # 0.95 target is for the daemon's end-to-end bench on a quiet box).
