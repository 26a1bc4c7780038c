"""What the integrations cost the daemon end to end: `vtest.avi` in bench mode with the HTTP API
and the MQTT bridge configured, with and without three MJPEG viewers (curl, as browsers would
be) and an MQTT subscriber on everything (a paho client in its own process) attached to a
real Mosquitto on loopback.

"plain" has the same HTTP and MQTT sinks configured, with nobody attached. Runs alternate
(bench/alternate.py): the ratio is attached over plain, medians and per round.

    python bench/bench_integrations.py [--rounds 3] [--backend openvino] [--precision int8]

Needs Debian's `mosquitto` and `curl` (scripts/install-system-deps.sh) and the `mqtt` and
`http` extras.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alternate import alternate, daemon_run

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


def clients(http_port: int, mqtt_port: int, workdir: Path) -> Callable[[], dict[str, int]]:
    """Three MJPEG viewers and an MQTT subscriber, attached as soon as the API listens (in a
    thread: the daemon is starting); returns what stops them and counts what they got."""
    procs: list[subprocess.Popen[bytes]] = []

    def attach() -> None:
        if not wait_listening(http_port):
            return
        url = f"http://127.0.0.1:{http_port}/api/cameras/{CAMERA}/mjpeg"
        for i in range(3):
            procs.append(subprocess.Popen(["curl", "-sN", "-o", str(workdir / f"v{i}.mjpeg"),
                                           url]))
        procs.append(subprocess.Popen([sys.executable, "-c", SUBSCRIBER, str(mqtt_port)],
                                      stdout=subprocess.PIPE))

    thread = threading.Thread(target=attach, daemon=True)
    thread.start()

    def finish() -> dict[str, int]:
        thread.join(5)
        got = {"mjpeg_frames": 0, "mqtt_messages": 0}
        for i, p in enumerate(procs):
            p.terminate()
            out, _ = p.communicate(timeout=10)
            if i < 3:
                got["mjpeg_frames"] += (workdir / f"v{i}.mjpeg").read_bytes().count(
                    b"--lepton-frame")
            elif out:
                got["mqtt_messages"] = int(out.split()[-1])
        return got

    return finish


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

        def run(name: str) -> dict[str, Any]:
            http_port = free_port()
            overrides = {"backend": args.backend, "precision": args.precision,
                         "http": {"host": "127.0.0.1", "port": http_port, "mjpeg_fps": 5,
                                  "mjpeg_width": 640},
                         "mqtt": {"host": "127.0.0.1", "port": mqtt_port},
                         "state_dir": str(workdir / "state")}
            attach = (lambda: clients(http_port, mqtt_port, workdir)) \
                if name == "attached" else None
            return daemon_run(overrides, during=attach)

        try:
            result = alternate(("plain", "attached"), args.rounds, run)
        finally:
            broker.terminate()
            broker.wait(10)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
