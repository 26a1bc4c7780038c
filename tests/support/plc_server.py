"""A PLC on loopback for tests: pymodbus's own Modbus TCP server in a thread, with its memory
(coils, discrete inputs, holding and input registers, 0..255 each) read and written by the test
as the PLC's program would."""

from __future__ import annotations

import asyncio
import socket
import threading
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

    def coils(self, address: int, count: int = 1) -> list[bool]:
        assert self._server is not None
        return [bool(v) for v in self._call(
            self._server.async_getValues(1, COILS, address, count))][:count]

    def registers(self, address: int, count: int = 1) -> list[int]:
        assert self._server is not None
        return list(self._call(self._server.async_getValues(1, HOLDING, address, count)))
