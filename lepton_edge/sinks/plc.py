"""The PLC output: each verdict written to a PLC over Modbus TCP (pymodbus), with a handshake.

Register map (addresses relative to `coil_base` and `register_base`; README, "PLC output"):

  coil  +0  result_valid  1 while the registers and bits below hold a result for the PLC
  coil  +1  pass          1: the part passed (only ever 1 while result_valid is 1)
  coil  +2  reject        1: reject the part. 1 by default, whenever no pass is being shown
  hreg  +0  result_code   1 pass, 2 count, 3 forbidden, 4 timeout, 10.. errors (verdict.py)
  hreg  +1  trigger_id    low 16 bits
  hreg  +2  trigger_id    high 16 bits
  hreg  +3  part_count    low 16 bits

Handshake, per verdict: (1) coils [valid=0, pass=0, reject=1]; (2) the four registers in one
write; (3) coils [valid=1, pass, reject=not pass]. The PLC takes a result when result_valid is 1
and trigger_id differs from the last it took. Then either
  - ack mode (`ack_coil` set): the PLC sets its ack coil once it has read the result; the box
    sees it, writes [0, 0, 1] and clears the ack coil; no newer result is written before (an
    ack that never comes is counted and the box resets to reject after `ack_timeout_ms`), or
  - pulse mode (no `ack_coil`): each result stays valid for `hold_ms`, then [0, 0, 1] (or the
    next result, which starts with that reset). A newer verdict waits for the hold to end, so
    a PLC that scans at least every hold_ms / 2 sees every result (told apart by trigger_id).
On (re)connect the box writes [0, 0, 1] first: the reject output defaults to reject until a
`pass` is written. A PLC that is gone never stalls the station: verdicts queue here (bounded),
reconnects back off exponentially, and a verdict older than `stale_after` when the PLC comes
back is not written (the PLC's own watchdog has rejected that part; the log has the verdict).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lepton_edge.analysis.inspection.triggers import Backoff, require_pymodbus
from lepton_edge.messages import HealthMessage
from lepton_edge.results import FrameResult, Outcome

log = logging.getLogger(__name__)

RESET = [False, False, True]  # result_valid, pass, reject


class PlcOutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    device_id: Annotated[int, Field(ge=0, le=255)] = 1
    coil_base: Annotated[int, Field(ge=0, le=65533)] = 0
    register_base: Annotated[int, Field(ge=0, le=65532)] = 0
    ack_coil: Annotated[int, Field(ge=0, le=65535)] | None = None
    ack_timeout_ms: Annotated[float, Field(gt=0, le=60000)] = 1000.0
    hold_ms: Annotated[float, Field(gt=0, le=60000)] = 200.0
    stale_after: Annotated[float, Field(gt=0, le=3600)] = 2.0
    timeout: Annotated[float, Field(gt=0, le=10)] = 0.5
    reconnect: Backoff = Backoff()

    @model_validator(mode="after")
    def _ack_apart(self) -> PlcOutputConfig:
        if self.ack_coil is not None and self.coil_base <= self.ack_coil <= self.coil_base + 2:
            raise ValueError(f"ack_coil {self.ack_coil} overlaps the result coils "
                             f"{self.coil_base}..{self.coil_base + 2}")
        return self


class PlcOutput:
    """The Sink of one station's verdicts to one PLC, on its own thread."""

    name = "plc"
    queue_limit = 1000

    def __init__(self, cfg: PlcOutputConfig, camera: str = "") -> None:
        self.cfg = cfg
        self.camera = camera
        self._queue: deque[Any] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self.connected = False
        self.written = 0
        self.stale = 0
        self.dropped = 0
        self.ack_timeouts = 0
        self.connects = 0
        self.failures = 0
        self._backoff = cfg.reconnect.initial
        self._next_attempt = 0.0
        self._hold_until: float | None = None  # pulse mode: reset to reject then
        self._ack_deadline: float | None = None  # ack mode: waiting for the PLC

    # ---------------------------------------------------------------- Sink

    def open(self) -> None:
        require_pymodbus(f"{self.camera}: inspect.plc")
        from pymodbus.client import ModbusTcpClient

        self._client = ModbusTcpClient(self.cfg.host, port=self.cfg.port,
                                       timeout=self.cfg.timeout, retries=0)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"plc-{self.camera}")
        self._thread.start()

    def frame(self, result: FrameResult, payload: bytes) -> None:
        pass

    def health(self, health: HealthMessage) -> None:
        pass

    def outcome(self, outcome: Outcome) -> None:
        if not hasattr(outcome, "result_code") or not hasattr(outcome, "trigger_id"):
            return
        with self._wake:
            if len(self._queue) >= self.queue_limit:
                old = self._queue.popleft()
                self.dropped += 1
                log.error("%s: PLC %s:%d unreachable with %d verdicts queued; trigger %d is "
                          "not written to it (it is in the verdict log)", self.camera,
                          self.cfg.host, self.cfg.port, len(self._queue), old.trigger_id)
            self._queue.append((outcome, time.monotonic()))
            self._wake.notify()

    def close(self, timeout: float = 3.0) -> None:
        with self._wake:
            if self._closing:
                return
            self._closing = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            self._client.close()

    @property
    def counters(self) -> dict[str, int | bool]:
        return {"connected": self.connected, "written": self.written, "stale": self.stale,
                "dropped": self.dropped, "ack_timeouts": self.ack_timeouts,
                "connects": self.connects, "failures": self.failures,
                "queued": len(self._queue)}

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._closing and (not self._queue or not self.connected):
                    break
                wait = self._wait_time()
                if wait > 0:
                    self._wake.wait(wait)
            try:
                self._step()
            except Exception as err:  # a PLC fault costs this sink only: reconnect
                self.failures += 1
                self._lost(err)
        if self.connected:
            self._try(lambda: self._coils(RESET))

    def _wait_time(self) -> float:
        now = time.monotonic()
        if not self.connected:
            return max(0.0, self._next_attempt - now) if self._queue or not self._closing \
                else 0.0
        if self._ack_deadline is not None:
            return 0.005  # polling the ack coil
        if self._hold_until is not None:
            return max(0.0, self._hold_until - now)
        if self._queue:
            return 0.0
        return 1.0

    def _step(self) -> None:
        now = time.monotonic()
        if not self.connected:
            if now >= self._next_attempt:
                self._connect()
            return
        if self._ack_deadline is not None:
            self._poll_ack(now)
            return
        if self._hold_until is not None:
            if now < self._hold_until:
                return  # every result is shown for hold_ms, however fast the next one comes
            self._hold_until = None
            with self._wake:
                waiting = bool(self._queue)
            if not waiting:
                self._coils(RESET)
                return
        with self._wake:
            item = self._queue[0] if self._queue else None
        if item is None:
            return
        verdict, queued_at = item
        if now - queued_at > self.cfg.stale_after:
            self.stale += 1
            log.warning("%s: verdict of trigger %d is %.1f s old; not written to the PLC (it "
                        "is in the verdict log)", self.camera, verdict.trigger_id,
                        now - queued_at)
        else:
            self._write(verdict)
        with self._wake:
            self._queue.popleft()

    def _connect(self) -> None:
        ok = False
        try:
            ok = bool(self._client.connect())
            if ok:
                self._coils(RESET)
        except Exception as err:
            log.debug("%s: PLC connect failed: %s", self.camera, err)
            ok = False
        if not ok:
            self._client.close()
            self._next_attempt = time.monotonic() + self._backoff
            log.warning("%s: PLC %s:%d unreachable; next try in %.1f s", self.camera,
                        self.cfg.host, self.cfg.port, self._backoff)
            self._backoff = min(self.cfg.reconnect.max, self._backoff * 2)
            return
        self.connected = True
        self.connects += 1
        self._backoff = self.cfg.reconnect.initial
        self._hold_until = self._ack_deadline = None
        log.info("%s: PLC output connected to %s:%d", self.camera, self.cfg.host, self.cfg.port)

    def _lost(self, err: BaseException) -> None:
        if self.connected:
            log.warning("%s: PLC %s:%d lost (%s); reconnecting", self.camera, self.cfg.host,
                        self.cfg.port, err)
        self.connected = False
        self._client.close()
        self._next_attempt = time.monotonic() + self._backoff
        self._backoff = min(self.cfg.reconnect.max, self._backoff * 2)

    def _write(self, v: Any) -> None:
        passed = v.verdict == "pass"
        tid = int(v.trigger_id)
        self._coils(RESET)
        self._check(self._client.write_registers(
            self.cfg.register_base,
            [int(v.result_code) & 0xFFFF, tid & 0xFFFF, (tid >> 16) & 0xFFFF,
             int(v.part_count) & 0xFFFF], device_id=self.cfg.device_id))
        self._coils([True, passed, not passed])
        self.written += 1
        now = time.monotonic()
        if self.cfg.ack_coil is not None:
            self._ack_deadline = now + self.cfg.ack_timeout_ms / 1000
        else:
            self._hold_until = now + self.cfg.hold_ms / 1000

    def _poll_ack(self, now: float) -> None:
        assert self.cfg.ack_coil is not None and self._ack_deadline is not None
        reply = self._check(self._client.read_coils(self.cfg.ack_coil, count=1,
                                                    device_id=self.cfg.device_id))
        acked = bool(reply.bits[0])
        if not acked and now < self._ack_deadline:
            return
        if not acked:
            self.ack_timeouts += 1
            log.warning("%s: the PLC did not acknowledge a result in %.0f ms; output reset to "
                        "reject", self.camera, self.cfg.ack_timeout_ms)
        self._coils(RESET)
        if acked:
            self._check(self._client.write_coil(self.cfg.ack_coil, False,
                                                device_id=self.cfg.device_id))
        self._ack_deadline = None

    def _coils(self, values: list[bool]) -> None:
        self._check(self._client.write_coils(self.cfg.coil_base, values,
                                             device_id=self.cfg.device_id))

    def _check(self, reply: Any) -> Any:
        if reply.isError():
            raise OSError(f"the PLC refused the request: {reply}")
        return reply

    def _try(self, fn: Any) -> None:
        try:
            fn()
        except Exception as err:
            log.debug("%s: PLC reset at close failed: %s", self.camera, err)
