"""The TensorRT runner on any machine: its open path, slots and submit run unmodified over
stand-ins for TensorRT's engine and pycuda's driver (tests/support/trt_standins.py), with the
real plan cache, plan key, `Gpu` and kernel loading. Each test is a finding of issue 14 (or
issue 12's prebuilt-plan lookup) that the old code got wrong."""

from __future__ import annotations

import ast
import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from lepton_edge.artifact import load_artifact
from lepton_edge.backends.base import BackendOptions
from lepton_edge.backends.tensorrt import TensorRtBackend
from lepton_edge.backends.tensorrt.cuda import kernels
from lepton_edge.backends.tensorrt.plan import plan_settings
from lepton_edge.compiler.build import CompileOptions, plan_step
from lepton_edge.config import parse_config
from lepton_edge.errors import BackendUnavailableError, ModelError
from lepton_edge.run import backend_options
from tests.support.trt_standins import (
    MEMORY,
    StandInPlans,
    fresh_kernels,
    make_gpu,
    plan_bytes,
)

ROOT = Path(__file__).resolve().parents[3]
ARTIFACT = ROOT / "engines" / "yolov8n"


@pytest.fixture(autouse=True)
def _kernels():
    with fresh_kernels():
        yield


def started(tmp_path: Path, precision: str = "int8", input_size: int = 640,
            plans: StandInPlans | None = None, **plan: object) -> TensorRtBackend:
    plans = plans or StandInPlans(plan=plan_bytes(**plan))
    backend = TensorRtBackend(load_artifact(ARTIFACT),
                              BackendOptions(precision=precision, state_dir=tmp_path,
                                             input_size=input_size))
    backend.start(plans.trt, make_gpu(), plans)
    return backend


def test_a_plan_built_by_compile_at_input_size_512_is_the_one_the_daemon_loads(tmp_path):
    """Issue 12: `compile --plan --input-size 512` and a daemon with `input_size: 512` derive
    the same settings, so the daemon's cache lookup finds the prebuilt plan (no rebuild)."""
    state = tmp_path / "state"
    plans = StandInPlans()
    opts = CompileOptions(model=ARTIFACT / "model.onnx", calib=ROOT / "calibration",
                          name="yolov8n", plan=True, state_dir=state, plan_input_size=512)
    plan_step(opts, ARTIFACT, load_artifact(ARTIFACT), plans)
    assert len(plans.builds) == 1 and plans.builds[0][1].max_hw == (512, 512)
    config = parse_config(f"model: {ARTIFACT}\nbackend: tensorrt\nprecision: int8\n"
                          f"input_size: 512\nstate_dir: {state}\n"
                          f"cameras: [{{id: a, url: {ROOT / 'samples' / 'vtest.avi'}}}]\n")
    options = backend_options(config)
    daemon_side = StandInPlans()  # a new process: nothing shared but the state directory
    backend = TensorRtBackend(load_artifact(ARTIFACT), options)
    backend.start(daemon_side.trt, make_gpu(), daemon_side)
    assert daemon_side.builds == [], "the daemon rebuilt a plan compile had built"
    assert backend.plan_path is not None and backend.plan_path.parent == state / "engines"
    assert len(list((state / "engines").glob("*.plan"))) == 1
    # and at another size the daemon looks for (and builds) another plan
    other = StandInPlans()
    TensorRtBackend(load_artifact(ARTIFACT), dataclasses.replace(options, input_size=640)) \
        .start(other.trt, make_gpu(), other)
    assert len(other.builds) == 1


def test_the_engine_takes_no_attributes_and_still_loads_from_the_cache(tmp_path):
    """Issue 14, critical: the engine (like TensorRT's) rejects new attributes; the plan
    loads on the first start and again from the cache, without a rebuild."""
    plans = StandInPlans()
    first = plans.load(ARTIFACT / "model.int8-device.onnx", tmp_path, plan_settings(640))
    with pytest.raises(AttributeError):
        first.value._lepton_runtime = plans.runtime
    again = StandInPlans().load(ARTIFACT / "model.int8-device.onnx", tmp_path, plan_settings(640))
    assert first.built and not again.built and len(plans.builds) == 1


def test_events_block_instead_of_spinning_and_take_no_timestamps(tmp_path):
    backend = started(tmp_path)
    drv = backend.gpu.drv
    want = drv.event_flags.BLOCKING_SYNC | drv.event_flags.DISABLE_TIMING
    assert backend.max_in_flight == 2
    assert drv.events == [want, want]


def test_batches_alternate_slots_and_each_output_is_its_own_frames(tmp_path):
    backend = started(tmp_path)
    batches = [np.full((1, 3, 512, 640), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4)]
    pending, results = [], []
    for batch in batches:
        pending.append(backend.submit(batch))
        if len(pending) == backend.max_in_flight:
            results.append(pending.pop(0).wait()[0])
    results += [p.wait()[0] for p in pending]
    assert [float(r.flat[0]) for r in results] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert results[0].shape == (1, 84, 512 * 640 // 64)
    device = [int(m) for slot in backend._slots for shaped in slot.shaped.values()
              for m in (shaped.input, *shaped.outputs)]
    assert len(device) == 4 and all(a in MEMORY for a in device)
    backend.close()
    assert not any(a in MEMORY for a in device), "close() left device memory allocated"
    backend.close()  # safe twice


def test_a_failed_open_leaves_the_backend_closed_and_the_next_open_starts_afresh(tmp_path):
    with pytest.raises(BackendUnavailableError, match="execution context"):
        started(tmp_path, max_contexts=1)  # the second slot's context fails
    backend = TensorRtBackend(load_artifact(ARTIFACT), BackendOptions(precision="int8",
                                                                      state_dir=tmp_path))
    plans = StandInPlans(plan=plan_bytes(max_contexts=1))
    with pytest.raises(BackendUnavailableError):
        backend.start(plans.trt, make_gpu(), plans)
    assert backend._engine is None and backend._slots == [] and backend._input is None
    with pytest.raises(RuntimeError, match="not open"):
        backend.submit(np.zeros((1, 3, 512, 640), np.float32))
    fixed = StandInPlans(plan=plan_bytes())
    # The cached stand-in plan still says max_contexts=1; a plan cache in a fresh folder.
    backend.options = dataclasses.replace(backend.options, state_dir=tmp_path / "fresh")
    backend.start(fixed.trt, make_gpu(), fixed)
    assert backend.max_in_flight == 2


def test_a_refused_optimization_profile_is_an_error(tmp_path):
    with pytest.raises(ModelError, match="refused optimization profile 0"):
        started(tmp_path, profile_ok=False)


def test_a_refused_tensor_address_is_an_error(tmp_path):
    backend = started(tmp_path, refuse_address="output0")
    with pytest.raises(ModelError, match="refused the address of tensor output0"):
        backend.submit(np.zeros((1, 3, 512, 640), np.float32))


def test_a_data_dependent_output_shape_is_a_clear_error(tmp_path):
    backend = started(tmp_path, data_dependent=True)
    with pytest.raises(ModelError, match=r"output0 has a data-dependent shape \(1, -1, 6\)"):
        backend.submit(np.zeros((1, 3, 512, 640), np.float32))


@pytest.mark.parametrize("where", ["input", "output"])
def test_bf16_and_fp8_tensors_are_a_clear_error_not_a_type_error(tmp_path, where):
    plan = {"in_dtype": "BF16"} if where == "input" else {"outputs": {"output0": "FP8"}}
    with pytest.raises(ModelError, match="numpy cannot hold"):
        started(tmp_path, **plan)


def test_fp16_runs_the_fp16_model_with_half_input_and_the_f16_kernel(tmp_path):
    backend = started(tmp_path, precision="fp16", in_dtype="HALF")
    assert backend.model_path.name == "model.fp16.onnx" and backend.encoding == "fp16"
    assert backend.input.dtype == np.float16
    out = backend.submit(np.full((1, 3, 512, 640), 0.5, np.float16)).wait()[0]
    assert out.dtype == np.float32 and float(out.flat[0]) == pytest.approx(0.5)
    assert b".entry letterbox_f16(" in backend.gpu.drv.modules[0]


def test_fp16_without_an_fp16_model_is_refused_not_run_as_fp32(tmp_path):
    art = load_artifact(ARTIFACT)
    art = dataclasses.replace(art, models={k: v for k, v in art.models.items() if k != "fp16"})
    with pytest.raises(ModelError, match=r"precision 'fp16' on tensorrt needs one of fp16"):
        TensorRtBackend(art, BackendOptions(precision="fp16"))


def test_the_open_path_loads_the_shipped_ptx_and_never_calls_nvcc(tmp_path, monkeypatch):
    """Issue 14: no compiler on the device. pycuda's SourceModule (nvcc) is booby-trapped and
    an `nvcc` on PATH records any call; the kernel comes from the shipped PTX."""
    calls = tmp_path / "nvcc-called"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvcc").write_text(f"#!/bin/sh\ntouch {calls}\nexit 1\n")
    (bin_dir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")

    def source_module(*args: object, **kwargs: object) -> None:
        raise AssertionError("SourceModule (nvcc) was called on the open path")

    trap = types.ModuleType("pycuda.compiler")
    trap.SourceModule = source_module
    monkeypatch.setitem(sys.modules, "pycuda.compiler", trap)
    backend = started(tmp_path / "state")
    assert backend.gpu.drv.modules == [kernels.ptx_path(87).read_bytes() + b"\0"]
    assert not calls.exists()


def test_no_module_of_the_package_uses_sourcemodule_or_runs_nvcc():
    found = []
    for path in (ROOT / "lepton_edge").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", None) or getattr(node, "id", None)
            if name == "SourceModule" or (isinstance(node, ast.ImportFrom)
                                          and node.module == "pycuda.compiler"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Constant) and node.value == "nvcc":
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} runs nvcc")
    assert found == []


def test_a_gpu_older_than_every_shipped_ptx_compiles_with_nvrtc(tmp_path):
    from lepton_edge.backends.tensorrt.cuda import DeviceInfo

    pytest.importorskip("nvidia.cuda_nvrtc", reason="NVRTC wheel not installed (dev extra)")
    pascal = DeviceInfo(0, "Stand-in Jetson TX2", "6.2", True, 12060)
    image, origin = kernels.kernel_image(pascal.compute_capability)
    assert origin == "NVRTC compute_62" and b".target sm_62" in image
    assert kernels.kernel_image("8.9")[1] == "letterbox.sm_87.ptx"  # Ada JITs Orin's PTX
    assert kernels.kernel_image("12.0")[1] == "letterbox.sm_90.ptx"
