"""CUDA pieces of the TensorRT backend, and a probe of the GPU that needs no Python package.

`probe_device()` asks the CUDA driver itself (`libcuda.so.1` through ctypes) whether a GPU is
there, its name, compute capability and whether it is integrated (Jetson): what the backend
registry, the plan cache key and the mapped-vs-pinned decision need, answered on machines
without pycuda and without importing anything heavy. Everything that allocates or launches is
in `buffers` (pycuda, imported only there).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from functools import cache

# CUdevice_attribute values from cuda.h (stable since CUDA 2.x/4.x).
_ATTR_INTEGRATED = 18
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76


@dataclass(frozen=True)
class DeviceInfo:
    """One CUDA device as the driver describes it."""

    ordinal: int
    name: str
    compute_capability: str  # "8.7"
    integrated: bool  # shares DRAM with the CPU (Jetson): mapped host memory is zero-copy
    driver_version: int  # 12060 = 12.6


class CudaUnavailable(Exception):
    """No usable CUDA driver or device; the message says which and why."""


@cache
def probe_device(ordinal: int = 0) -> DeviceInfo:
    """Describe CUDA device `ordinal`; raises CudaUnavailable with the reason."""
    lib = _load_driver()
    _check(lib, lib.cuInit(0), "cuInit")
    count = ctypes.c_int(0)
    _check(lib, lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if ordinal >= count.value:
        raise CudaUnavailable(f"CUDA device {ordinal} asked for, the driver sees {count.value}")
    dev = ctypes.c_int(0)
    _check(lib, lib.cuDeviceGet(ctypes.byref(dev), ordinal), "cuDeviceGet")
    name = ctypes.create_string_buffer(256)
    _check(lib, lib.cuDeviceGetName(name, len(name), dev), "cuDeviceGetName")

    def attr(which: int) -> int:
        value = ctypes.c_int(0)
        _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(value), which, dev),
               "cuDeviceGetAttribute")
        return value.value

    version = ctypes.c_int(0)
    _check(lib, lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
    return DeviceInfo(
        ordinal=ordinal,
        name=name.value.decode(errors="replace"),
        compute_capability=f"{attr(_ATTR_CC_MAJOR)}.{attr(_ATTR_CC_MINOR)}",
        integrated=bool(attr(_ATTR_INTEGRATED)),
        driver_version=version.value,
    )


def cuda_available() -> tuple[bool, str]:
    """Whether a CUDA device is usable here, and why not. Never raises."""
    try:
        dev = probe_device()
    except CudaUnavailable as err:
        return False, str(err)
    return True, f"{dev.name} (compute capability {dev.compute_capability})"


def _load_driver() -> ctypes.CDLL:
    names = ["libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
    for name in filter(None, names):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise CudaUnavailable(
        "no CUDA driver (libcuda.so.1 not found: no NVIDIA GPU or driver on this machine, or a "
        "container started without the NVIDIA runtime)"
    )


def _check(lib: ctypes.CDLL, status: int, call: str) -> None:
    if status == 0:
        return
    text = ctypes.c_char_p()
    lib.cuGetErrorString(status, ctypes.byref(text))
    what = text.value.decode() if text.value else f"CUresult {status}"
    hint = " (no CUDA-capable device is visible)" if status == 100 else ""
    raise CudaUnavailable(f"{call} failed: {what}{hint}")
