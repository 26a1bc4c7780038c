"""The shipped letterbox PTX on a real CUDA driver: every shipped architecture the GPU can JIT
loads with `module_from_buffer` (no nvcc), and so does NVRTC's PTX for the GPU's own
architecture (the run-time fallback)."""

from __future__ import annotations

import pytest

from lepton_edge.backends.tensorrt.cuda import kernels


def _load(gpu, image: bytes) -> None:
    with gpu.active():
        module = gpu.drv.module_from_buffer(image)
        for name in ("letterbox_f32", "letterbox_f16"):
            module.get_function(name)


def test_every_shipped_ptx_the_gpu_can_run_loads(gpu):
    major, minor = (int(x) for x in gpu.compute_capability.split("."))
    archs = [a for a in kernels.ARCHS if a <= 10 * major + minor]
    if not archs:
        pytest.skip(f"compute capability {gpu.compute_capability} is older than every shipped PTX")
    for arch in archs:
        _load(gpu, kernels.ptx_path(arch).read_bytes() + b"\0")


def test_nvrtc_ptx_for_this_gpu_loads(gpu):
    from lepton_edge.backends.tensorrt.cuda import nvrtc
    from lepton_edge.errors import BackendUnavailableError

    try:
        nvrtc.version()
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    arch = int(gpu.compute_capability.replace(".", ""))
    _load(gpu, nvrtc.compile_ptx(kernels.SOURCE.read_text(), arch, kernels.SOURCE.name) + b"\0")
