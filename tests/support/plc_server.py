"""A PLC on loopback for tests: pymodbus's own Modbus TCP server in a thread, with its memory
(coils, discrete inputs, holding and input registers, 0..255 each) read and written by the test
as the PLC's program would.

Run as a script it is a PLC on its own (another process, as a PLC is another device):
`python tests/support/plc_server.py --parts N --rate R` prints `{"port": P}`, waits for the
box's output to connect (reject coil set), runs `run_line`, prints the results as one JSON
line and exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from typing import Any

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

SIZE = 256
COILS, DISCRETE, HOLDING = 1, 2, 3  # function codes that address each table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackPlc:
    """`with LoopbackPlc() as plc:` a Modbus TCP server on 127.0.0.1:`plc.port`, device id 1."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or _free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> LoopbackPlc:
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="plc", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the loopback PLC did not start in 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = self._server = None

    def __enter__(self) -> LoopbackPlc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        bits = [SimData(0, count=SIZE, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=SIZE, values=0, datatype=DataType.REGISTERS)]
        device = SimDevice(1, simdata=(bits, [SimData(0, count=SIZE, values=False,
                                                      datatype=DataType.BITS)], regs,
                                       [SimData(0, count=SIZE, values=0,
                                                datatype=DataType.REGISTERS)]))
        self._loop = asyncio.get_running_loop()
        self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
        await self._server.serve_forever(background=True)
        self._ready.set()
        await self._server.serving

    # ------------------------------------------------------------ the PLC program's memory

    def _call(self, coro: Any) -> Any:
        assert self._loop is not None, "the loopback PLC is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    def set_coil(self, address: int, value: bool) -> None:
        assert self._server is not None
        self._call(self._server.async_setValues(1, COILS, address, [value]))

    def set_discrete(self, address: int, value: bool) -> None:
        assert self._server is not None
        self._call(self._server.async_setValues(1, DISCRETE, address, [value]))

    def set_register(self, address: int, value: int) -> None:
        assert self._server is not None
        self._call(self._server.async_setValues(1, HOLDING, address, [value]))

    def coils(self, address: int, count: int = 1) -> list[bool]:
        assert self._server is not None
        return [bool(v) for v in self._call(
            self._server.async_getValues(1, COILS, address, count))][:count]

    def registers(self, address: int, count: int = 1) -> list[int]:
        assert self._server is not None
        return list(self._call(self._server.async_getValues(1, HOLDING, address, count)))


TRIGGER_COIL = 100
PART_COUNTER = 50  # holding register the PLC increments per part (with --counter)


def run_line(plc: LoopbackPlc, n: int, rate: float,
             counter: bool = False) -> list[dict[str, Any]]:
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
        if counter:  # the part counter: a poll that comes late still counts every part
            plc.set_register(PART_COUNTER, len(raised) & 0xFFFF)
            time.sleep(0.5 / rate)
        else:
            plc.set_coil(TRIGGER_COIL, True)
            time.sleep(0.5 / rate)
            plc.set_coil(TRIGGER_COIL, False)
        # a late PLC (a loaded test machine) keeps the low half too: an edge needs both
        t_next = max(t_next + 1 / rate, time.monotonic() + 0.5 / rate)
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", type=int, required=True)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--counter", action="store_true",
                    help="count parts in a holding register instead of pulsing a coil")
    args = ap.parse_args()
    with LoopbackPlc() as plc:
        print(json.dumps({"port": plc.port}), flush=True)
        deadline = time.monotonic() + 60
        while not plc.coils(2)[0]:  # the box's output connected and wrote "reject"
            if time.monotonic() > deadline:
                print(json.dumps({"error": "the box never connected"}), flush=True)
                return 1
            time.sleep(0.01)
        time.sleep(0.5)
        print(json.dumps({"seen": run_line(plc, args.parts, args.rate, args.counter)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
