"""A factory line end to end against a real Modbus TCP server on loopback acting as the PLC:
the PLC raises the trigger coil, the station inspects, the PLC reads the result registers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lepton_edge.sinks.verdict_log import VerdictLog
from tests.analysis.inspection.conftest import dog_rule
from tests.support.inspection_rig import Rig

pytest.importorskip("pymodbus", reason="the PLC tests need pymodbus (pip install pymodbus)")

from tests.support.plc_server import LoopbackPlc

TRIGGER_COIL = 100


def line_config(port: int, **extra: Any) -> dict[str, Any]:
    return dog_rule(
        triggers=[{"type": "modbus", "host": "127.0.0.1", "port": port, "table": "coil",
                   "address": TRIGGER_COIL, "poll_ms": 2, "timeout": 2.0}],
        plc={"host": "127.0.0.1", "port": port, "hold_ms": 40, "timeout": 2.0}, **extra)


def run_line(plc: LoopbackPlc, n: int, rate: float) -> list[dict[str, Any]]:
    """The PLC program: a part every 1/rate s (the trigger coil high for half the period, then
    low), and a scan every 2 ms that takes each new result (result_valid and a new trigger_id)."""
    results: dict[int, dict[str, Any]] = {}
    raised: list[float] = []
    done = threading.Event()

    def scan() -> None:
        last_id = 0
        while not done.is_set():
            valid, passed, reject = plc.coils(0, 3)
            code, lo, hi, parts = plc.registers(0, 4)
            tid = lo | hi << 16
            if valid and tid != last_id:
                results[tid] = {"trigger_id": tid, "code": code, "pass": passed,
                                "reject": reject, "parts": parts, "t": time.monotonic()}
                last_id = tid
            time.sleep(0.002)

    scanner = threading.Thread(target=scan, daemon=True)
    scanner.start()
    t_next = time.monotonic()
    for _ in range(n):
        time.sleep(max(0.0, t_next - time.monotonic()))
        raised.append(time.monotonic())
        plc.set_coil(TRIGGER_COIL, True)
        time.sleep(0.5 / rate)
        plc.set_coil(TRIGGER_COIL, False)
        t_next += 1 / rate
    deadline = time.monotonic() + 5
    while len(results) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    done.set()
    scanner.join(5)
    seen = []
    for k in range(1, n + 1):  # the k-th part raised the coil for trigger k
        r = results.get(k, {"trigger_id": None})
        if "t" in r:
            r["plc_ms"] = (r.pop("t") - raised[k - 1]) * 1000
        seen.append(r)
    return seen


def _wait(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def check_line(make_station: Any, detector: Any, dog_clip: Any, tmp_path: Path,
               n: int) -> None:
    with LoopbackPlc() as plc:
        station, sink = make_station(line_config(plc.port, deadline_ms=1500, max_pending=2))
        _wait(lambda: station.plc.connected)
        assert plc.coils(0, 3) == [False, False, True]  # reject until a pass is written
        rig = Rig(station, dog_clip, detector, fps=30).start()
        try:
            time.sleep(0.3)
            seen = run_line(plc, n, rate=10.0)
            verdicts = sink.wait_for(n, timeout=10)
        finally:
            station.close("stopping")
            rig.stop()
    ids = [v.trigger_id for v in verdicts]
    assert sorted(ids) == list(range(1, n + 1)), "a verdict for every trigger, none twice"
    lost = [s for s in seen if s["trigger_id"] is None]
    assert not lost, f"{len(lost)} of {n} results never reached the PLC"
    assert [s["trigger_id"] for s in seen] == list(range(1, n + 1))
    by_id = {v.trigger_id: v for v in verdicts}
    for s in seen:
        v = by_id[s["trigger_id"]]
        assert s["code"] == v.result_code and s["pass"] == (v.verdict == "pass")
        assert s["reject"] == (v.verdict != "pass")
    passed = sum(v.verdict == "pass" for v in verdicts)
    box = [v.latency_ms for v in verdicts]
    at_plc = [s["plc_ms"] for s in seen]
    with VerdictLog(tmp_path / "state" / "verdicts.sqlite") as vlog:
        rows = list(vlog.rows("line-1"))
    assert len(rows) == n and all(r["verdict"] for r in rows)
    print(f"\nline: {n} PLC triggers at 10/s on {detector.name}: {len(verdicts)} verdicts, "
          f"0 lost, {passed} pass, counters {station.counters}; trigger->verdict p50 "
          f"{_pct(box, 0.5):.1f} ms p99 {_pct(box, 0.99):.1f} ms; coil raised->result read "
          f"by the PLC p50 {_pct(at_plc, 0.5):.1f} ms p99 {_pct(at_plc, 0.99):.1f} ms")
    assert passed >= 0.9 * n  # every part is the dog photo: it passes unless the box is late


def test_plc_triggers_100_parts(make_station: Any, detector: Any, dog_clip: Any,
                                tmp_path: Path) -> None:
    check_line(make_station, detector, dog_clip, tmp_path, 100)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_plc_triggers_1000_parts_at_10_per_second(make_station: Any, detector: Any,
                                                  dog_clip: Any, tmp_path: Path) -> None:
    check_line(make_station, detector, dog_clip, tmp_path, 1000)
