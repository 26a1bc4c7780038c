"""Where a station's triggers come from: a software request over ZeroMQ, a fixed interval, or a
PLC input over Modbus TCP. Each runs its own thread and calls `fire(source) -> trigger_id` the
moment it sees a trigger; the station stamps the time and owns the ids.

- software: a ZeroMQ REP socket; a request (`{"camera": ID}`, or empty) is answered with
  `{"v": 1, "camera": ID, "trigger_id": N}` (`lepton-edge trigger ENDPOINT --camera ID`).
- interval: every `every` seconds (a free-running line, or a test).
- modbus: polls one coil or discrete input every `poll_ms`; a rising edge (0 -> 1) is a trigger.
  Or (`table: holding_register | input_register`) a part counter the PLC increments per part:
  an increase by k is k triggers, so a slow poll never loses a part (16-bit wrap-around).
  The first reading after start is the baseline (a level already high is not an edge). Across
  a lost connection the last level read is kept: an input that went high while the link was
  down is a trigger when the link is back (a part inspected late beats a part never answered).
  A lost connection is retried with backoff.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, Protocol

import zmq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lepton_edge.errors import ConfigError

log = logging.getLogger(__name__)

Fire = Callable[..., int]  # fire(source, t=monotonic, ts=epoch) -> trigger_id


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def require_pymodbus(what: str) -> None:
    """Refuse a Modbus trigger or PLC output when pymodbus is missing, saying how to fix it."""
    import importlib.util

    if importlib.util.find_spec("pymodbus") is None:
        raise ConfigError(f"{what} talks Modbus TCP, which needs pymodbus: "
                          f"pip install 'lepton-edge[plc]'")


class Backoff(_Strict):
    """Reconnect delays, doubling from `initial` to `max` seconds. (Not lepton_edge.config's
    Reconnect: config.py will import these models, so they must not import it.)"""

    initial: Annotated[float, Field(gt=0, le=60)] = 0.2
    max: Annotated[float, Field(gt=0, le=3600)] = 5.0

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max}) must be >= initial ({self.initial})")
        return self


class SoftwareTriggerConfig(_Strict):
    type: Literal["software"]
    endpoint: str = "tcp://127.0.0.1:5560"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"must start with tcp://, ipc:// or inproc://, got {v!r}")
        return v


class IntervalTriggerConfig(_Strict):
    type: Literal["interval"]
    every: Annotated[float, Field(gt=0, le=86400)]


class ModbusTriggerConfig(_Strict):
    type: Literal["modbus"]
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    device_id: Annotated[int, Field(ge=0, le=255)] = 1
    table: Literal["coil", "discrete_input", "holding_register",
                   "input_register"] = "discrete_input"
    address: Annotated[int, Field(ge=0, le=65535)]
    poll_ms: Annotated[float, Field(ge=1, le=1000)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=10)] = 0.5
    reconnect: Backoff = Backoff()


TriggerConfig = Annotated[
    SoftwareTriggerConfig | IntervalTriggerConfig | ModbusTriggerConfig,
    Field(discriminator="type"),
]


class Trigger(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Threaded:
    """A trigger that runs `_loop` on its own thread until `stop()`."""

    name = "trigger"

    def __init__(self, camera: str, fire: Fire) -> None:
        self.camera = camera
        self.fire = fire
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._prepare()
        self._thread = threading.Thread(target=self._guarded, daemon=True,
                                        name=f"{self.name}-{self.camera}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _prepare(self) -> None:
        pass

    def _guarded(self) -> None:
        try:
            self._loop()
        except Exception:
            log.exception("%s: the %s trigger thread failed; no more triggers from it",
                          self.camera, self.name)

    def _loop(self) -> None:
        raise NotImplementedError


class SoftwareTrigger(_Threaded):
    name = "software"

    def __init__(self, cfg: SoftwareTriggerConfig, camera: str, fire: Fire) -> None:
        super().__init__(camera, fire)
        self.cfg = cfg
        self._sock: zmq.Socket[Any] | None = None

    def _prepare(self) -> None:
        sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.REP)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.cfg.endpoint)
        except zmq.ZMQError as err:
            sock.close()
            raise ConfigError(f"{self.camera}: inspect.triggers: cannot bind the software "
                              f"trigger endpoint {self.cfg.endpoint} ({err}); pick a free "
                              f"address") from err
        self._sock = sock

    def _loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                request = sock.recv()
                sock.send(json.dumps(self._answer(request)).encode())
        finally:
            sock.close()

    def _answer(self, request: bytes) -> dict[str, Any]:
        camera = self.camera
        if request.strip():
            try:
                body = json.loads(request)
                camera = str(body.get("camera") or self.camera)
            except (ValueError, AttributeError):
                return {"v": 1, "error": 'the request must be empty or JSON {"camera": ID}'}
        if camera != self.camera:
            return {"v": 1, "error": f"this endpoint triggers camera {self.camera!r}, "
                                     f"not {camera!r}"}
        return {"v": 1, "camera": self.camera, "trigger_id": self.fire("software")}


class IntervalTrigger(_Threaded):
    name = "interval"

    def __init__(self, cfg: IntervalTriggerConfig, camera: str, fire: Fire) -> None:
        super().__init__(camera, fire)
        self.cfg = cfg

    def _loop(self) -> None:
        due = time.monotonic() + self.cfg.every
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.fire("interval")
            due += self.cfg.every
            due = max(due, time.monotonic())  # a stalled process does not fire a burst


class ModbusTrigger(_Threaded):
    name = "modbus"

    def __init__(self, cfg: ModbusTriggerConfig, camera: str, fire: Fire) -> None:
        super().__init__(camera, fire)
        self.cfg = cfg
        self.edges = 0
        self.reconnects = 0
        self.connected = False
        self._edges: queue.SimpleQueue[tuple[float, float] | None] = queue.SimpleQueue()
        self._firing: threading.Thread | None = None

    def _prepare(self) -> None:
        require_pymodbus(f"{self.camera}: inspect.triggers (type: modbus)")
        self._firing = threading.Thread(target=self._fire_edges, daemon=True,
                                        name=f"modbus-fire-{self.camera}")
        self._firing.start()

    def _fire_edges(self) -> None:
        while (edge := self._edges.get()) is not None:
            try:
                self.fire("modbus", t=edge[0], ts=edge[1])
            except Exception:
                log.exception("%s: firing a modbus trigger failed", self.camera)

    def stop(self) -> None:
        super().stop()
        self._edges.put(None)
        if self._firing is not None:
            self._firing.join(5)

    def _loop(self) -> None:
        from pymodbus.client import ModbusTcpClient

        cfg = self.cfg
        client = ModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout, retries=0)
        backoff = cfg.reconnect.initial
        last: int | None = None
        try:
            while not self._stop.is_set():
                level = self._read(client)
                if level is None:
                    client.close()
                    if self.connected:
                        log.warning("%s: modbus trigger %s:%d lost; reconnecting", self.camera,
                                    cfg.host, cfg.port)
                    self.connected = False
                    self._stop.wait(backoff)
                    backoff = min(cfg.reconnect.max, backoff * 2)
                    continue
                if not self.connected:
                    self.connected, backoff = True, cfg.reconnect.initial
                    self.reconnects += 1
                    log.info("%s: modbus trigger on %s:%d %s %d", self.camera, cfg.host,
                             cfg.port, cfg.table, cfg.address)
                for _ in range(self._new_parts(last, level)):
                    self.edges += 1
                    # stamped now; fired on another thread: the log's fsync must not make
                    # this poll loop miss the next edge
                    self._edges.put((time.monotonic(), time.time()))
                last = level
                self._stop.wait(cfg.poll_ms / 1000)
        finally:
            client.close()

    def _new_parts(self, last: int | None, now: int) -> int:
        """Triggers between two readings: a rising edge of a bit, or a counter's increase."""
        if last is None:
            return 0  # the first reading is the baseline
        if self.cfg.table in ("coil", "discrete_input"):
            return 1 if now and not last else 0
        delta = (now - last) & 0xFFFF
        if delta > 1000:  # a counter reset or a jump backwards: not a thousand parts
            log.warning("%s: the PLC's part counter went from %d to %d; taken as a reset",
                        self.camera, last, now)
            return 0
        return delta

    def _read(self, client: Any) -> int | None:
        """The input's level (0/1) or the counter's value, or None when the PLC cannot be
        read."""
        from pymodbus.exceptions import ModbusException

        cfg = self.cfg
        try:
            if not client.connected and not client.connect():
                return None
            read = {"coil": client.read_coils, "discrete_input": client.read_discrete_inputs,
                    "holding_register": client.read_holding_registers,
                    "input_register": client.read_input_registers}[cfg.table]
            reply = read(cfg.address, count=1, device_id=cfg.device_id)
        except (ModbusException, OSError) as err:
            log.debug("%s: modbus trigger read failed: %s", self.camera, err)
            return None
        if reply.isError():
            log.warning("%s: the PLC refused reading %s %d: %s", self.camera, cfg.table,
                        cfg.address, reply)
            return None
        if cfg.table in ("coil", "discrete_input"):
            return int(bool(reply.bits[0]))
        return int(reply.registers[0])


def build_trigger(cfg: SoftwareTriggerConfig | IntervalTriggerConfig | ModbusTriggerConfig,
                  camera: str, fire: Fire) -> Trigger:
    if isinstance(cfg, SoftwareTriggerConfig):
        return SoftwareTrigger(cfg, camera, fire)
    if isinstance(cfg, IntervalTriggerConfig):
        return IntervalTrigger(cfg, camera, fire)
    return ModbusTrigger(cfg, camera, fire)
