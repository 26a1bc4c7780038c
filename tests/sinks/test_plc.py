"""The PLC output against pymodbus's own server on loopback: the register map, the pulse and
ack handshakes, reject by default, and a PLC that goes away and comes back."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pymodbus", reason="the PLC tests need pymodbus (pip install pymodbus)")

from lepton_edge.analysis.inspection.station import InspectConfig, build_station
from lepton_edge.analysis.inspection.verdict import Reason, Verdict
from lepton_edge.sinks.plc import PlcOutput, PlcOutputConfig
from lepton_edge.sinks.verdict_log import VerdictLog
from tests.support.inspection_rig import Collector
from tests.support.plc_server import LoopbackPlc


def _verdict(tid: int, kind: str = "pass") -> Verdict:
    reasons = () if kind == "pass" else (Reason("count", "tray", "count dog", "== 1", 0),)
    return Verdict("line-1", tid, kind, reasons, {}, 12.0, tid, time.time(), time.time())  # type: ignore[arg-type]


def _wait(pred: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize(("kind", "code", "bits"), [("pass", 1, [True, True, False]),
                                                    ("fail", 2, [True, False, True])])
def test_pulse_handshake_writes_the_map_then_back_to_reject(kind: str, code: int,
                                                             bits: list[bool]) -> None:
    with LoopbackPlc() as plc:
        out = PlcOutput(PlcOutputConfig(host="127.0.0.1", port=plc.port, coil_base=10,
                                        register_base=20, hold_ms=300), "line-1")
        out.open()
        try:
            _wait(lambda: out.connected)
            assert plc.coils(10, 3) == [False, False, True]  # reject until a pass is written
            out.outcome(_verdict(70000, kind))  # > 16 bits: high word used
            _wait(lambda: plc.coils(10)[0])
            assert plc.coils(10, 3) == bits
            assert plc.registers(20, 4) == [code, 70000 & 0xFFFF, 70000 >> 16, 70000 & 0xFFFF]
            _wait(lambda: not plc.coils(10)[0], timeout=2)  # hold_ms later
            assert plc.coils(10, 3) == [False, False, True]
        finally:
            out.close()


def test_ack_handshake_holds_the_result_until_the_plc_acknowledges() -> None:
    with LoopbackPlc() as plc:
        out = PlcOutput(PlcOutputConfig(host="127.0.0.1", port=plc.port, ack_coil=50,
                                        ack_timeout_ms=5000), "line-1")
        out.open()
        try:
            _wait(lambda: out.connected)
            out.outcome(_verdict(1))
            out.outcome(_verdict(2, "fail"))
            _wait(lambda: plc.coils(0)[0])
            assert plc.registers(1) == [1]
            time.sleep(0.3)
            assert plc.coils(0, 3) == [True, True, False]  # still shown: no ack yet
            assert plc.registers(1) == [1]  # the next result waits for the ack
            plc.set_coil(50, True)  # the PLC took it
            _wait(lambda: plc.registers(1) == [2])
            assert plc.coils(50) == [False]  # the box cleared the ack
            assert plc.coils(0, 3) == [True, False, True]
            assert out.counters["written"] == 2 and out.ack_timeouts == 0
        finally:
            out.close()


def test_a_plc_that_is_gone_costs_nothing_and_verdicts_are_still_logged(
        tmp_path: Path) -> None:
    with LoopbackPlc() as plc:
        port = plc.port
        cfg = InspectConfig.model_validate({
            "triggers": [{"type": "interval", "every": 0.05}], "deadline_ms": 20,
            "rois": [{"id": "frame", "count": [{"label": "dog", "exact": 1}]}],
            "evidence": {"enabled": False},
            "plc": {"host": "127.0.0.1", "port": port, "hold_ms": 10, "stale_after": 0.5,
                    "reconnect": {"initial": 0.1, "max": 0.4}}})
        sink = Collector()
        station = build_station("line-1", cfg, sink, tmp_path)  # no camera: fail/timeout
        assert station.plc is not None
        try:
            _wait(lambda: station.plc.written >= 3)
            plc.stop()  # the PLC is gone
            gone_at = station.counters["triggers"]
            time.sleep(2.0)
            during = station.counters["triggers"] - gone_at
            assert during >= 20  # the station went on: triggers, verdicts, deadlines
            assert not station.plc.connected
            plc.start()  # back, same port, fresh memory
            _wait(lambda: station.plc.connects == 2, timeout=5)
            written = station.plc.written
            _wait(lambda: station.plc.written > written + 3)
            top = station.counters["triggers"]
            _wait(lambda: (plc.registers(1, 2)[0] | plc.registers(2)[0] << 16) >= top - 2)
        finally:
            station.close("stopping")
    fired = station.counters["triggers"]
    assert sorted(v.trigger_id for v in sink.items) == list(range(1, fired + 1))
    with VerdictLog(tmp_path / "verdicts.sqlite") as vlog:
        rows = list(vlog.rows("line-1"))
    assert len(rows) == fired and all(r["verdict"] for r in rows)  # all logged, PLC or not
    c = station.plc.counters
    assert c["stale"] >= 1  # old verdicts were not replayed to the PLC after it came back
    print(f"\nPLC gone 2 s: {during} triggers meanwhile, all logged; PLC counters {c}")


def test_pulse_mode_shows_every_result_for_hold_ms_even_back_to_back() -> None:
    with LoopbackPlc() as plc:
        out = PlcOutput(PlcOutputConfig(host="127.0.0.1", port=plc.port, hold_ms=150),
                        "line-1")
        out.open()
        try:
            _wait(lambda: out.connected)
            for tid in (1, 2, 3):
                out.outcome(_verdict(tid))  # three verdicts in the same millisecond
            shown: dict[int, list[float]] = {}
            t0 = time.monotonic()
            while time.monotonic() - t0 < 1.0:
                valid = plc.coils(0)[0]
                tid = plc.registers(1)[0]
                if valid:
                    shown.setdefault(tid, []).append(time.monotonic())
                time.sleep(0.005)
        finally:
            out.close()
    assert sorted(shown) == [1, 2, 3]
    for tid in (1, 2):  # the last one may be cut by close()
        assert shown[tid][-1] - shown[tid][0] >= 0.1, tid
