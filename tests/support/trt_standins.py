"""Stand-ins for TensorRT's runtime objects and pycuda's driver, for running the TensorRT
runner, plan cache and kernel loading on a machine without a GPU.

They are doubles for what those tests are not about (TensorRT's inference, the CUDA driver);
the runner, `TensorRtPlans`, the engine cache and `Gpu` run unmodified on top of them. Like the
real classes (checked by test_conformance against NVIDIA's bindings), the engine and context
take no new attributes (`__slots__`), `set_tensor_address` and `set_optimization_profile_async`
answer with a bool, `nptype` raises TypeError for BF16, and a -1 dimension means a
data-dependent shape. A stand-in "plan" is JSON describing the engine it deserializes to.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lepton_edge.backends.tensorrt.cuda import DeviceInfo
from lepton_edge.backends.tensorrt.plan import PlanSettings, TensorRtPlans

ANCHORS = 84  # rows of the YOLOv8 output; the columns follow the input size


def plan_bytes(**overrides: Any) -> bytes:
    """A stand-in plan: the engine it deserializes to."""
    spec = {"input": "images", "in_dtype": "FLOAT", "outputs": {"output0": "FLOAT"},
            "dynamic": True, "profiles": 2, "data_dependent": False, "profile_ok": True,
            "refuse_address": None, "max_contexts": 8}
    spec.update(overrides)
    return json.dumps(spec).encode()


# ------------------------------------------------------------------ tensorrt


class _Enum:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


def make_trt(version: str = "10.3.0") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    data_type = types.SimpleNamespace(**{n: _Enum(n) for n in ("FLOAT", "HALF", "BF16", "FP8")})
    io_mode = types.SimpleNamespace(INPUT=_Enum("INPUT"), OUTPUT=_Enum("OUTPUT"))
    mapping = {data_type.FLOAT: np.float32, data_type.HALF: np.float16}

    def nptype(dt: Any) -> Any:
        if dt in mapping:
            return mapping[dt]
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

    class Logger:
        WARNING = 2

        def __init__(self, severity: int) -> None:
            self.severity = severity

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> StandInEngine | None:
            try:
                spec = json.loads(data)
            except ValueError:
                return None
            return StandInEngine(spec, trt)

    trt.DataType, trt.TensorIOMode, trt.nptype = data_type, io_mode, nptype
    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


class StandInEngine:
    """An ICudaEngine: no `__dict__`, so `engine.anything = x` raises AttributeError."""

    __slots__ = ("_contexts", "_spec", "_trt")

    def __init__(self, spec: dict[str, Any], trt: types.ModuleType) -> None:
        self._spec, self._trt, self._contexts = spec, trt, 0

    @property
    def num_io_tensors(self) -> int:
        return 1 + len(self._spec["outputs"])

    def get_tensor_name(self, i: int) -> str:
        return [self._spec["input"], *self._spec["outputs"]][i]

    def get_tensor_mode(self, name: str) -> Any:
        io = self._trt.TensorIOMode
        return io.INPUT if name == self._spec["input"] else io.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name == self._spec["input"]:
            return (-1, 3, -1, -1) if self._spec["dynamic"] else (1, 3, 640, 640)
        return (-1, ANCHORS, -1)

    def get_tensor_dtype(self, name: str) -> Any:
        kind = (self._spec["in_dtype"] if name == self._spec["input"]
                else self._spec["outputs"][name])
        return getattr(self._trt.DataType, kind)

    @property
    def num_optimization_profiles(self) -> int:
        return int(self._spec["profiles"])

    def create_execution_context(self) -> StandInContext | None:
        self._contexts += 1
        if self._contexts > self._spec["max_contexts"]:
            return None  # TensorRT's way of saying out of memory
        return StandInContext(self._spec)


class StandInContext:
    """An IExecutionContext whose 'inference' writes, into every output element, the mean of
    its batch item's input (so a test can tell which frame an output came from)."""

    __slots__ = ("_addresses", "_shape", "_spec", "calls")

    def __init__(self, spec: dict[str, Any]) -> None:
        self._spec, self._addresses, self._shape = spec, {}, None
        self.calls: list[str] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        self.calls.append(f"profile {index}")
        return bool(self._spec["profile_ok"])

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self._shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name == self._spec["input"]:
            return self._shape
        n, _, h, w = self._shape
        return (n, -1, 6) if self._spec["data_dependent"] else (n, ANCHORS, (h * w) // 64)

    def set_tensor_address(self, name: str, address: int) -> bool:
        if name == self._spec["refuse_address"]:
            return False
        self._addresses[name] = address
        return True

    def execute_async_v3(self, stream: int) -> bool:
        in_dtype = np.float16 if self._spec["in_dtype"] == "HALF" else np.float32
        n = self._shape[0]
        x = MEMORY[self._addresses[self._spec["input"]]].view(in_dtype)[:int(np.prod(self._shape))]
        means = x.reshape(n, -1).astype(np.float64).mean(axis=1)
        for name in self._spec["outputs"]:
            out = MEMORY[self._addresses[name]].view(np.float32)
            out[:] = np.repeat(means, out.size // n).astype(np.float32)
        return True


class StandInPlans(TensorRtPlans):
    """`TensorRtPlans` with TensorRT's builder replaced by one that returns `plan` and counts
    its builds; key, cache and deserialization are the real code."""

    def __init__(self, trt: types.ModuleType | None = None, plan: bytes | None = None,
                 device: DeviceInfo | None = None) -> None:
        super().__init__(trt or make_trt(), device or ORIN, "R36 (release), REVISION: 4.3")
        self.plan = plan or plan_bytes()
        self.builds: list[tuple[Path, PlanSettings, Path]] = []

    def build(self, onnx_path: Path, settings: PlanSettings, timing_path: Path) -> bytes:
        self.builds.append((onnx_path, settings, timing_path))
        return self.plan


ORIN = DeviceInfo(ordinal=0, name="Stand-in Orin", compute_capability="8.7", integrated=True,
                  driver_version=12060)

# ------------------------------------------------------------------ pycuda.driver

MEMORY: dict[int, np.ndarray] = {}
_addresses = itertools.count(0x1000, 0x1000)


class _Allocation:
    def __init__(self, nbytes: int) -> None:
        self.address = next(_addresses)
        MEMORY[self.address] = np.zeros(nbytes, np.uint8)

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        MEMORY.pop(self.address, None)


class _Stream:
    def __init__(self) -> None:
        self.handle = id(self)

    def synchronize(self) -> None:
        pass


class _Module:
    def __init__(self, image: bytes) -> None:
        self.image = image

    def get_function(self, name: str) -> Any:
        if f".entry {name}(".encode() not in self.image:
            raise RuntimeError(f"cuModuleGetFunction: {name} not found")
        return types.SimpleNamespace(prepare=lambda sig: None,
                                     prepared_async_call=lambda *a: None)


def make_drv() -> types.SimpleNamespace:
    """A pycuda.driver whose memory is numpy arrays; records events and loaded modules."""
    drv = types.SimpleNamespace(events=[], modules=[])
    drv.event_flags = types.SimpleNamespace(DEFAULT=0, BLOCKING_SYNC=1, DISABLE_TIMING=2)
    drv.host_alloc_flags = types.SimpleNamespace(DEVICEMAP=2)
    drv.device_attribute = types.SimpleNamespace(INTEGRATED=18)
    drv.Context = types.SimpleNamespace(pop=lambda: None)
    drv.Stream = _Stream

    def event(flags: int = 0) -> Any:
        drv.events.append(flags)
        return types.SimpleNamespace(flags=flags, record=lambda stream: None,
                                     synchronize=lambda: None)

    def module_from_buffer(image: bytes) -> _Module:
        drv.modules.append(image)
        return _Module(image)

    def htod(dst: Any, host: np.ndarray, stream: Any) -> None:
        raw = np.ascontiguousarray(host).view(np.uint8).ravel()
        MEMORY[int(dst)][:raw.size] = raw

    def dtoh(host: np.ndarray, src: Any, stream: Any) -> None:
        flat = host.reshape(-1).view(np.uint8)
        flat[:] = MEMORY[int(src)][:flat.size]

    drv.Event, drv.module_from_buffer = event, module_from_buffer
    drv.memcpy_htod_async, drv.memcpy_dtoh_async = htod, dtoh
    drv.mem_alloc = _Allocation
    drv.pagelocked_empty = lambda shape, dtype, mem_flags=0: np.zeros(shape, dtype)
    return drv


class _Device:
    def __init__(self, info: DeviceInfo) -> None:
        self.info = info

    def name(self) -> str:
        return self.info.name

    def get_attribute(self, which: int) -> int:
        return int(self.info.integrated)

    def compute_capability(self) -> tuple[int, int]:
        major, minor = self.info.compute_capability.split(".")
        return int(major), int(minor)


def make_gpu(info: DeviceInfo = ORIN) -> Any:
    """The real `Gpu` over the stand-in driver."""
    from lepton_edge.backends.tensorrt.cuda.buffers import Gpu

    context = types.SimpleNamespace(push=lambda: None)
    return Gpu(make_drv(), context, _Device(info))


@contextlib.contextmanager
def fresh_kernels() -> Iterator[None]:
    """Forget the process's loaded kernels before and after (they belong to one driver)."""
    from lepton_edge.backends.tensorrt.cuda import buffers

    buffers._kernels.clear()
    try:
        yield
    finally:
        buffers._kernels.clear()
