"""A station process killed with SIGKILL mid-run and started again: the log holds every
trigger, and the unanswered ones get `error: restart` (a real subprocess running the station
loop, triggered over ZeroMQ)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from lepton_edge.analysis.inspection.commands import send_trigger
from lepton_edge.sinks.verdict_log import VerdictLog
from tests.analysis.inspection.conftest import dog_rule
from tests.conftest import daemon_env, free_port
from tests.support.inspection_rig import ROOT, make_parts_video

RIG = ROOT / "tests" / "support" / "inspection_rig.py"


def _start(cfg: Path, video: Path, state: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(RIG), "--config", str(cfg), "--video",
                             str(video), "--state-dir", str(state)], stdout=out.open("w"),
                            stderr=subprocess.STDOUT, text=True, env=daemon_env())


def _lines(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def _wait_ready(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(x.get("ready") for x in _lines(path)):
            return
        assert proc.poll() is None, path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the station process never got ready:\n{path.read_text()}")


def test_sigkill_mid_run_then_restart_answers_every_trigger(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    # A long delay keeps triggers pending for seconds, so the kill finds some unanswered.
    cfg = tmp_path / "inspect.yaml"
    cfg.write_text(yaml.safe_dump(dog_rule(
        triggers=[{"type": "software", "endpoint": endpoint}], delay_ms=1500,
        deadline_ms=6000, max_pending=8)))
    video = make_parts_video(tmp_path / "dog.avi", ("dog",), 3)
    state = tmp_path / "state"
    first = _start(cfg, video, state, tmp_path / "run1.out")
    try:
        _wait_ready(tmp_path / "run1.out", first)
        answered = send_trigger(endpoint, "line-1")["trigger_id"]
        deadline = time.monotonic() + 15
        while not any(x.get("trigger_id") == answered for x in _lines(tmp_path / "run1.out")):
            assert time.monotonic() < deadline, "the first trigger never got its verdict"
            time.sleep(0.05)
        pending = [send_trigger(endpoint, "line-1")["trigger_id"] for _ in range(4)]
        first.send_signal(signal.SIGKILL)  # mid-run: four triggers wait for their frame
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    with VerdictLog(state / "verdicts.sqlite") as vlog:
        rows = {r["trigger_id"]: r for r in vlog.rows("line-1")}
    assert sorted(rows) == [answered, *pending]  # every trigger survived the kill
    assert rows[answered]["verdict"] == "pass"
    assert all(rows[t]["verdict"] is None for t in pending)

    second = _start(cfg, video, state, tmp_path / "run2.out")
    try:
        _wait_ready(tmp_path / "run2.out", second)
        after = send_trigger(endpoint, "line-1")["trigger_id"]
        assert after == pending[-1] + 1  # ids go on, never reused
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        if second.poll() is None:
            second.kill()
    replayed = [x for x in _lines(tmp_path / "run2.out") if "trigger_id" in x]
    restarts = [x["trigger_id"] for x in replayed if x["reasons"]
                and x["reasons"][0]["code"] == "restart"]
    assert restarts == pending  # emitted on the restart, too
    with VerdictLog(state / "verdicts.sqlite") as vlog:
        rows = {r["trigger_id"]: r for r in vlog.rows("line-1")}
    assert sorted(rows) == [answered, *pending, after]
    assert [(rows[t]["verdict"], rows[t]["reason"], rows[t]["result_code"]) for t in pending] \
        == [("error", "restart", 13)] * 4
    assert rows[after]["verdict"] is not None  # answered before the clean stop
