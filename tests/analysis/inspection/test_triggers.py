"""Triggers for real: the software endpoint through `lepton-edge trigger` (a subprocess), an
interval, and a PLC input's rising edges over Modbus TCP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from lepton_edge.analysis.inspection.triggers import (
    IntervalTrigger,
    IntervalTriggerConfig,
    ModbusTrigger,
    ModbusTriggerConfig,
    SoftwareTrigger,
    SoftwareTriggerConfig,
)
from lepton_edge.errors import ConfigError
from tests.conftest import daemon_env, free_port

COMMANDS = "lepton_edge.analysis.inspection.commands"


class Fired:
    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []
        self.lock = threading.Lock()

    def __call__(self, source: str, t: float | None = None, ts: float | None = None) -> int:
        with self.lock:
            self.calls.append((source, t or time.monotonic()))
            return len(self.calls)


def test_software_trigger_replies_with_the_id() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    fired = Fired()
    trig = SoftwareTrigger(SoftwareTriggerConfig(type="software", endpoint=endpoint), "line-1",
                           fired)
    trig.start()
    try:
        r = subprocess.run([sys.executable, "-m", COMMANDS, "trigger", endpoint, "--camera",
                            "line-1", "--count", "3"], capture_output=True, text=True,
                           timeout=60, env=daemon_env())
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["1", "2", "3"]
        r = subprocess.run([sys.executable, "-m", COMMANDS, "trigger", endpoint, "--camera",
                            "gate-9", "--json"], capture_output=True, text=True, timeout=60,
                           env=daemon_env())
        assert r.returncode == 2 and "triggers camera 'line-1', not 'gate-9'" in r.stderr
        with pytest.raises(ConfigError, match="cannot bind"):
            SoftwareTrigger(SoftwareTriggerConfig(type="software", endpoint=endpoint),
                            "line-2", fired).start()
    finally:
        trig.stop()
    assert [c[0] for c in fired.calls] == ["software"] * 3


def test_trigger_command_without_a_station_times_out() -> None:
    r = subprocess.run([sys.executable, "-m", COMMANDS, "trigger",
                        f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.3"],
                       capture_output=True, text=True, timeout=60, env=daemon_env())
    assert r.returncode == 8 and "no reply in 0.3 s" in r.stderr


def test_interval_trigger() -> None:
    fired = Fired()
    trig = IntervalTrigger(IntervalTriggerConfig(type="interval", every=0.05), "line-1", fired)
    trig.start()
    time.sleep(0.53)
    trig.stop()
    assert 8 <= len(fired.calls) <= 11


def test_modbus_rising_edges_of_a_discrete_input() -> None:
    pytest.importorskip("pymodbus", reason="needs pymodbus")
    from tests.support.plc_server import LoopbackPlc

    fired = Fired()
    with LoopbackPlc() as plc:
        plc.set_discrete(7, True)  # already high at start: the baseline, not an edge
        trig = ModbusTrigger(ModbusTriggerConfig(type="modbus", host="127.0.0.1",
                                                 port=plc.port, address=7, poll_ms=2), "l",
                             fired)
        trig.start()
        try:
            time.sleep(0.2)
            assert fired.calls == []
            for _ in range(5):
                plc.set_discrete(7, False)
                time.sleep(0.05)
                t_edge = time.monotonic()
                plc.set_discrete(7, True)
                time.sleep(0.05)
                assert fired.calls and 0 <= fired.calls[-1][1] - t_edge < 0.05
        finally:
            trig.stop()
    assert [c[0] for c in fired.calls] == ["modbus"] * 5
    assert json.dumps(trig.edges) == "5"


def test_modbus_part_counter_loses_no_part_to_a_slow_poll() -> None:
    pytest.importorskip("pymodbus", reason="needs pymodbus")
    from tests.support.plc_server import LoopbackPlc

    fired = Fired()
    with LoopbackPlc() as plc:
        plc.set_register(3, 65534)  # near the 16-bit wrap
        trig = ModbusTrigger(ModbusTriggerConfig(type="modbus", host="127.0.0.1",
                                                 port=plc.port, table="holding_register",
                                                 address=3, poll_ms=200), "l", fired)
        trig.start()
        try:
            time.sleep(0.3)
            for value in (65535, 0, 1):  # three parts inside one poll period
                plc.set_register(3, value)
            time.sleep(0.5)
            assert len(fired.calls) == 3
            plc.set_register(3, 40000)  # a reset or garbage: not 40,000 parts
            time.sleep(0.5)
        finally:
            trig.stop()
    assert len(fired.calls) == 3
