"""The letterbox kernel as PTX, compiled ahead of time: no compiler on the device at run time.

`letterbox.cu` is compiled by NVRTC (`nvrtc.compile_ptx`) for the virtual architectures of
Jetson Xavier (compute_72), Jetson Orin (compute_87) and current data-centre GPUs (compute_90),
and the PTX ships as package data (`letterbox.sm_<arch>.ptx`). The CUDA driver JIT-compiles
PTX for the GPU it runs on, so the highest shipped architecture not above the GPU's covers it
and every newer GPU. Only a GPU older than every shipped architecture compiles the source at
run time, with NVRTC, never nvcc. The PTX is NVRTC 12.6's (`.version 8.5`), which any driver
of CUDA 12.6 or newer loads (JetPack 6.1+, the first with TensorRT 10).

Regenerate after editing the kernel: `make kernels` (python -m lepton_edge.backends.tensorrt
.cuda.kernels); a test checks the shipped PTX equals a fresh build.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from lepton_edge.backends.tensorrt.cuda import nvrtc

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SOURCE = HERE / "letterbox.cu"
ARCHS = (72, 87, 90)
NVRTC_VERSION = (12, 6)  # the shipped PTX's compiler; pinned in pyproject's `kernels` extra


def ptx_path(arch: int) -> Path:
    return HERE / f"letterbox.sm_{arch}.ptx"


def shipped_arch(compute_capability: str) -> int | None:
    """The highest shipped architecture the GPU of `compute_capability` ("8.7") can JIT, or
    None when the GPU is older than all of them."""
    major, minor = (int(x) for x in compute_capability.split("."))
    fits = [a for a in ARCHS if a <= 10 * major + minor]
    return max(fits) if fits else None


def kernel_image(compute_capability: str) -> tuple[bytes, str]:
    """(NUL-terminated PTX for `pycuda.driver.module_from_buffer`, where it came from)."""
    arch = shipped_arch(compute_capability)
    if arch is not None and ptx_path(arch).is_file():
        return ptx_path(arch).read_bytes() + b"\0", ptx_path(arch).name
    major, minor = compute_capability.split(".")
    target = int(major + minor)
    log.info("cuda: no shipped letterbox PTX for compute capability %s; compiling it with "
             "NVRTC", compute_capability)
    return nvrtc.compile_ptx(SOURCE.read_text(), target, SOURCE.name) + b"\0", \
        f"NVRTC compute_{target}"


def regenerate() -> list[Path]:
    """Rewrite the shipped PTX from `letterbox.cu` with the pinned NVRTC."""
    if nvrtc.version() != NVRTC_VERSION:
        raise SystemExit(f"NVRTC {nvrtc.version()} found, the shipped PTX is built with "
                         f"{NVRTC_VERSION}: pip install 'nvidia-cuda-nvrtc-cu12==12.6.*'")
    out = []
    for arch in ARCHS:
        path = ptx_path(arch)
        path.write_bytes(nvrtc.compile_ptx(SOURCE.read_text(), arch, SOURCE.name))
        out.append(path)
    return out


if __name__ == "__main__":
    for p in regenerate():
        print(f"wrote {p} ({p.stat().st_size} bytes)")
    sys.exit(0)
