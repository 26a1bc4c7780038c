"""The durable verdict log: triggers before verdicts, restart answers, retention, export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lepton_edge.errors import ConfigError
from lepton_edge.sinks.verdict_log import DeliveryMarks, VerdictLog, VerdictLogConfig, export
from tests.conftest import daemon_env

COMMANDS = "lepton_edge.analysis.inspection.commands"  # `lepton-edge ...` once cli.py adds them


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", COMMANDS, *args], capture_output=True,
                          text=True, timeout=60, env=daemon_env())


def _verdict(tid: int, kind: str = "fail", ts: float | None = None) -> dict:
    ts = ts or time.time()
    reasons = [] if kind == "pass" else [{"code": "count", "roi": "tray", "rule": "count dog",
                                          "expected": "== 1", "found": 0}]
    return {"v": 1, "camera": "line-1", "trigger_id": tid, "verdict": kind, "reasons": reasons,
            "rois": {}, "latency_ms": 42.0, "part_count": tid, "ts_trigger": ts, "ts": ts,
            "frame": 7, "evidence": None, "result_code": 1 if kind == "pass" else 2,
            "source": "software"}


def test_wal_full_and_a_row_per_trigger(tmp_path: Path) -> None:
    with VerdictLog(tmp_path / "v.sqlite") as vlog:
        vlog.record_verdict(_verdict(2, "pass"))  # a verdict may land before its trigger row
        vlog.record_trigger("line-1", 2, "software", time.time())
        vlog.record_trigger("line-1", 1, "modbus", time.time() - 1)
        assert vlog.last_trigger_id("line-1") == 2 and vlog.part_count("line-1") == 2
        assert [u["trigger_id"] for u in vlog.unanswered("line-1")] == [1]
        rows = list(vlog.rows())
    assert [(r["trigger_id"], r["verdict"]) for r in rows] == [(1, None), (2, "pass")]
    db = sqlite3.connect(tmp_path / "v.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_retention_keeps_unanswered_rows(tmp_path: Path) -> None:
    old = time.time() - 10 * 86400
    with VerdictLog(tmp_path / "v.sqlite", VerdictLogConfig(retention_days=5,
                                                            max_rows=100)) as vlog:
        for i in range(1, 151):
            vlog.record_verdict(_verdict(i, ts=old if i <= 20 else time.time() - 1000 + i))
        vlog.record_trigger("line-1", 151, "software", old)  # no verdict yet: kept
        assert vlog.prune() == 50  # 20 too old, then 30 beyond the newest 100
        ids = [r["trigger_id"] for r in vlog.rows()]
    assert ids[0] == 151 and ids[1:] == list(range(51, 151))


def test_export_csv_and_json(tmp_path: Path) -> None:
    with VerdictLog(tmp_path / "v.sqlite") as vlog:
        vlog.record_verdict(_verdict(1, "pass"))
        vlog.record_verdict(_verdict(2, "fail"))
        vlog.record_trigger("line-1", 3, "software", time.time())
        out = io.StringIO()
        assert export(vlog.rows(), out, "csv") == 3
        table = list(csv.DictReader(io.StringIO(out.getvalue())))
        out = io.StringIO()
        assert export(vlog.rows(), out, "json") == 3
        body = json.loads(out.getvalue())
        with pytest.raises(ConfigError, match="csv or json"):
            export(vlog.rows(), io.StringIO(), "xml")
    assert [r["verdict"] for r in table] == ["pass", "fail", ""]
    assert table[1]["reasons"] == "count tray count dog expected == 1 found 0"
    assert [b["trigger_id"] for b in body] == [1, 2, 3] and body[1]["reasons"][0]["found"] == 0


def test_verdicts_export_command(tmp_path: Path) -> None:
    with VerdictLog(tmp_path / "verdicts.sqlite") as vlog:
        for i in range(1, 4):
            vlog.record_verdict(_verdict(i, "pass"))
    out = tmp_path / "q.csv"
    r = run_cli("verdicts", "export", "--state-dir", str(tmp_path), "--camera", "line-1",
                "--format", "csv", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "3 rows" in r.stderr and len(out.read_text().splitlines()) == 4
    r = run_cli("verdicts", "export", "--db", str(tmp_path / "none.sqlite"))
    assert r.returncode == 2 and "no verdict log at" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("verdicts", "export", "--state-dir", str(tmp_path), "--since", "yesterday")
    assert r.returncode == 2 and "expected an ISO date" in r.stderr


def test_delivery_marks_per_consumer_and_camera(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    with VerdictLog(path) as vlog:
        for t in (1, 2, 3, 5):
            vlog.record_verdict(_verdict(t))
        vlog.record_trigger("line-1", 4, "software", time.time())  # waits for its verdict
        a = DeliveryMarks(path, "mqtt:a").open()
        try:
            # A new consumer starts before the oldest undecided trigger, else after the newest.
            assert a.mark("line-1") == 3
            assert a.mark("line-2") == 0
            logged = {r["trigger_id"]: r["payload"].encode() for r in vlog.rows("line-1")
                      if r["payload"]}
            assert a.decided_after("line-1", 0) == [(t, logged[t]) for t in (1, 2, 3, 5)]
            assert a.decided_after("line-1", 1, limit=2) == [(2, logged[2]), (3, logged[3])]
            assert a.between("line-1", 2, 5) == [(3, True), (4, False), (5, True)]
            assert a.waiting("line-1", 3) == 1
            a.set_mark("line-1", 5)
        finally:
            a.close()
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT consumer, camera, trigger_id FROM delivered ORDER BY "
                              "camera").fetchall() == [("mqtt:a", "line-1", 5),
                                                       ("mqtt:a", "line-2", 0)]
        vlog.record_verdict(_verdict(4))
        again, other = DeliveryMarks(path, "mqtt:a").open(), DeliveryMarks(path, "mqtt:b").open()
        try:
            assert again.mark("line-1") == 5  # stored
            assert other.mark("line-1") == 5  # new, nothing undecided: after the newest
        finally:
            again.close()
            other.close()
