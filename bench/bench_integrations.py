"""What the integrations cost the daemon end to end: `vtest.avi` in bench mode with the HTTP API
and the MQTT bridge configured, with and without three MJPEG viewers (curl, as browsers would
be) and an MQTT subscriber on everything (a paho client in its own process) attached to a
real Mosquitto on loopback.

Runs alternate (plain, attached, plain, attached, ...) so drift on a shared machine hits both
sides alike, after one warm-up run that is not counted; each run's fps is the daemon's own
published frames over its active seconds. The ratio is the median of the attached runs over
the median of the plain ones, and per pair.

    python bench/bench_integrations.py [--rounds 3] [--backend openvino] [--precision int8]

Needs Debian's `mosquitto` and `curl` (scripts/install-system-deps.sh) and the `mqtt` and
`http` extras.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from lepton_edge.run import RunOptions, resolve_run
from lepton_edge.service.daemon import Daemon

REPO = Path(__file__).resolve().parents[1]
CAMERA = "plaza"

SUBSCRIBER = """
import sys, time, signal
import paho.mqtt.client as mqtt
n = 0
def on_message(c, u, m):
    global n
    n += 1
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-sub")
c.on_message = on_message
c.on_connect = lambda c, u, f, r, p: c.subscribe("#", qos=1)
c.connect("127.0.0.1", int(sys.argv[1]))
signal.signal(signal.SIGTERM, lambda *a: (print(n, flush=True), sys.exit(0)))
c.loop_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not listen within 10 s")


def wait_listening(port: int, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.02)
    return False


def one_run(args: argparse.Namespace, mqtt_port: int, attach: bool,
            workdir: Path) -> dict[str, float]:
    http_port = free_port()
    overrides = {"backend": args.backend, "precision": args.precision,
                 "http": {"host": "127.0.0.1", "port": http_port, "mjpeg_fps": 5,
                          "mjpeg_width": 640},
                 "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
                 "state_dir": str(workdir / "state")}
    run = resolve_run(REPO / "deploy" / "bench.yaml", overrides, options=RunOptions())
    daemon = Daemon(run)
    clients: list[subprocess.Popen[bytes]] = []

    def attach_clients() -> None:
        if not wait_listening(http_port):
            return
        url = f"http://127.0.0.1:{http_port}/api/cameras/{CAMERA}/mjpeg"
        for i in range(3):
            clients.append(subprocess.Popen(["curl", "-sN", "-o", str(workdir / f"v{i}.mjpeg"),
                                             url]))
        clients.append(subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(mqtt_port)],
                                        stdout=subprocess.PIPE))

    helper = threading.Thread(target=attach_clients, daemon=True) if attach else None
    if helper is not None:
        helper.start()
    daemon.run()
    if helper is not None:
        helper.join(5)
    frames_seen = 0
    messages = 0
    for i, c in enumerate(clients):
        c.terminate()
        out, _ = c.communicate(timeout=10)
        if i < 3:
            frames_seen += (workdir / f"v{i}.mjpeg").read_bytes().count(b"--lepton-frame")
        elif out:
            messages = int(out.split()[-1])
    stats = daemon.pipeline.stats
    fps = stats.published_frames / stats.active_seconds
    return {"fps": fps, "frames": stats.published_frames, "mjpeg_frames": frames_seen,
            "mqtt_messages": messages}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    for tool in ("mosquitto", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}: bash scripts/install-system-deps.sh")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker, mqtt_port = start_broker(workdir)
        try:
            one_run(args, mqtt_port, False, workdir)  # warm-up: caches, first allocations
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for r in range(args.rounds):
                for attach in (r % 2 == 1, r % 2 == 0):  # alternate which goes first
                    got = one_run(args, mqtt_port, attach, workdir)
                    runs[attach].append(got)
                    print(f"round {r + 1} {'attached' if attach else 'plain   '}: "
                          f"{got['fps']:.1f} fps, {got['frames']} frames, MJPEG frames read "
                          f"{got['mjpeg_frames']}, MQTT messages {got['mqtt_messages']}",
                          flush=True)
        finally:
            broker.terminate()
            broker.wait(10)
    plain = [r["fps"] for r in runs[False]]
    attached = [r["fps"] for r in runs[True]]
    pairs = [a / p for a, p in zip(attached, plain, strict=True)]
    ratio = statistics.median(attached) / statistics.median(plain)
    print(f"plain {statistics.median(plain):.1f} fps, with 3 MJPEG viewers + an MQTT "
          f"subscriber {statistics.median(attached):.1f} fps: ratio {ratio:.3f} (per round "
          f"{', '.join(f'{p:.3f}' for p in pairs)})")
    if args.json:
        print(json.dumps({"plain_fps": plain, "attached_fps": attached, "ratio": ratio,
                          "pairs": pairs}))


if __name__ == "__main__":
    main()
