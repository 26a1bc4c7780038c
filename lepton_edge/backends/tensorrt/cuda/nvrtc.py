"""NVRTC, CUDA's runtime compiler library, through ctypes: CUDA C++ source to PTX.

No nvcc, no driver and no GPU: `libnvrtc.so.12` comes from the `nvidia-cuda-nvrtc-cu12` wheel
(x86 and Jetson alike) or from a CUDA install (`/usr/local/cuda/lib64`, JetPack's
`cuda-nvrtc-12-6`). The build uses it to write the shipped PTX (`kernels.regenerate`), and
the backend only where no shipped PTX fits the GPU (`kernels.kernel_image`).
"""

from __future__ import annotations

import ctypes
import importlib.util
from functools import cache
from pathlib import Path

from lepton_edge.errors import BackendUnavailableError

LIBRARY = "libnvrtc.so.12"
HINT = ("pip install 'nvidia-cuda-nvrtc-cu12==12.6.*' (the `kernels` extra), or install "
        "CUDA's NVRTC (JetPack: cuda-nvrtc-12-6)")


def _candidates() -> list[str]:
    """The wheel's library first (the pinned version), then the loader's, then CUDA's."""
    paths = []
    try:
        spec = importlib.util.find_spec("nvidia.cuda_nvrtc")
    except (ImportError, ValueError):  # no `nvidia` namespace package at all
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        paths.append(str(Path(root) / "lib" / LIBRARY))
    return [*paths, LIBRARY, f"/usr/local/cuda/lib64/{LIBRARY}"]


@cache
def library() -> ctypes.CDLL:
    """The NVRTC library, or BackendUnavailableError saying where to get it."""
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError as err:
            errors.append(str(err))
            continue
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        return lib
    raise BackendUnavailableError(f"NVRTC ({LIBRARY}) is not installed: {HINT}")


def version() -> tuple[int, int]:
    """NVRTC's (major, minor), e.g. (12, 6)."""
    lib = library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
    return major.value, minor.value


def compile_ptx(source: str, arch: int, name: str = "kernel.cu") -> bytes:
    """PTX for virtual architecture `compute_<arch>` (72, 87, 90, ...), without the trailing
    NUL. Raises BackendUnavailableError with NVRTC's log when the source does not compile."""
    lib = library()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                       None, None), "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture=compute_{arch}".encode(), b"--std=c++17"]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        status = lib.nvrtcCompileProgram(prog, len(opts), argv)
        if status != 0:
            raise BackendUnavailableError(
                f"NVRTC {'.'.join(map(str, version()))} cannot compile {name} for "
                f"compute_{arch}: {_message(lib, status)}: {_log(lib, prog)}")
        size = ctypes.c_size_t()
        _check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "nvrtcGetPTXSize")
        buf = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, buf), "nvrtcGetPTX")
        return buf.raw.rstrip(b"\0")
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _log(lib: ctypes.CDLL, prog: ctypes.c_void_p) -> str:
    size = ctypes.c_size_t()
    if lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)) != 0 or size.value <= 1:
        return "(no log)"
    buf = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, buf)
    return buf.value.decode(errors="replace").strip()


def _message(lib: ctypes.CDLL, status: int) -> str:
    text = lib.nvrtcGetErrorString(status)
    return text.decode() if text else f"nvrtcResult {status}"


def _check(lib: ctypes.CDLL, status: int, call: str) -> None:
    if status != 0:
        raise BackendUnavailableError(f"{call} failed: {_message(lib, status)}")
