"""The letterbox kernel ships as PTX built by NVRTC (no nvcc on the device, issue 14): the
shipped files are current (equal to a fresh NVRTC build of letterbox.cu), cover Xavier (sm_72),
Orin (sm_87) and current data-centre GPUs (sm_90), ship as package data, and a GPU picks the
highest architecture it can JIT. Runs on any machine with the NVRTC wheel (the dev extra)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest

from lepton_edge.backends.tensorrt.cuda import kernels

ROOT = Path(__file__).resolve().parents[4]


def _nvrtc():
    from lepton_edge.backends.tensorrt.cuda import nvrtc
    from lepton_edge.errors import BackendUnavailableError

    try:
        version = nvrtc.version()
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    return nvrtc, version


@pytest.mark.parametrize("arch", kernels.ARCHS)
def test_letterbox_compiles_with_nvrtc_and_the_shipped_ptx_is_current(arch):
    nvrtc, version = _nvrtc()
    if version != kernels.NVRTC_VERSION:
        pytest.skip(f"NVRTC {version} found, the shipped PTX is NVRTC {kernels.NVRTC_VERSION}'s: "
                    f"install the dev extra's pinned nvidia-cuda-nvrtc-cu12 to compare")
    fresh = nvrtc.compile_ptx(kernels.SOURCE.read_text(), arch, kernels.SOURCE.name)
    assert f".target sm_{arch}".encode() in fresh
    for entry in (b".entry letterbox_f32(", b".entry letterbox_f16("):
        assert entry in fresh
    assert kernels.ptx_path(arch).read_bytes() == fresh, (
        f"{kernels.ptx_path(arch).name} is stale: run `make kernels` and commit it")


def test_shipped_ptx_loads_on_drivers_of_cuda_12_6_and_newer():
    for arch in kernels.ARCHS:
        head = kernels.ptx_path(arch).read_text()[:400]
        assert re.search(r"^\.version 8\.5$", head, re.M), head  # PTX ISA of CUDA 12.6
        assert "release 12.6" in head


def test_a_broken_kernel_is_a_clear_error_with_nvrtc_s_log():
    nvrtc, _ = _nvrtc()
    from lepton_edge.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match=r"cannot compile bad.cu for compute_87.*"
                                                      r"undefined"):
        nvrtc.compile_ptx("__global__ void k() { undefined_thing(); }", 87, "bad.cu")


@pytest.mark.parametrize("cc, arch", [
    ("7.2", 72), ("7.5", 72), ("8.0", 72), ("8.6", 72), ("8.7", 87), ("8.9", 87),
    ("9.0", 90), ("10.0", 90), ("12.1", 90), ("6.2", None), ("5.3", None),
])
def test_each_gpu_takes_the_highest_ptx_it_can_jit(cc, arch):
    assert kernels.shipped_arch(cc) == arch


def test_the_ptx_and_the_source_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()  # (no tomllib on Python 3.10)
    section = text.split("[tool.setuptools.package-data]", 1)[1]
    line = re.search(r"^lepton_edge = \[(.*)\]$", section, re.M)
    assert line, "pyproject.toml has no package-data for lepton_edge"
    patterns = [p.strip().strip('"') for p in line.group(1).split(",")]
    package = ROOT / "lepton_edge"
    for path in [kernels.SOURCE, *(kernels.ptx_path(a) for a in kernels.ARCHS)]:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"
