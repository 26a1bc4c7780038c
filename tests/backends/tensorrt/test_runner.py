"""The TensorRT backend. On any machine: it imports nothing heavy, says why it cannot run, and
its constructor does no I/O. With TensorRT, pycuda and a GPU (marked gpu, skipped with the
reason otherwise): outputs agree with ONNX Runtime on real frames, the GPU letterbox path
agrees with the CPU one, two batches run in flight, and no frame allocates."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.artifact import load_artifact
from lepton_edge.backends.base import BackendOptions, ImageInputBackend
from lepton_edge.backends.tensorrt import TensorRtBackend, available
from lepton_edge.errors import BackendUnavailableError
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox
from tests.support.imports import gpu_modules_imported_by

ROOT = Path(__file__).resolve().parents[3]
ARTIFACT = ROOT / "engines" / "yolov8n"


def test_importing_the_backend_imports_no_tensorrt_or_pycuda():
    assert gpu_modules_imported_by("lepton_edge.backends.tensorrt",
                                   "lepton_edge.backends.tensorrt.plan",
                                   "lepton_edge.backends.tensorrt.cuda.buffers",
                                   "lepton_edge.backends.tensorrt.cuda.kernels") == []


def test_available_returns_a_reason_and_never_raises():
    ok, why = available()
    assert isinstance(ok, bool)
    assert ok or why


def test_constructor_does_no_io_and_open_says_why_it_cannot_run(tmp_path):
    backend = TensorRtBackend(load_artifact(ARTIFACT), BackendOptions(state_dir=tmp_path))
    assert callable(TensorRtBackend.submit_image)  # the pipeline's ImageInputBackend path
    assert not tmp_path.joinpath("engines").exists()
    if available()[0]:
        pytest.skip("TensorRT runs here; the GPU tests cover open()")
    with pytest.raises(BackendUnavailableError, match="backend tensorrt"):
        backend.open()
    backend.close()
    backend.close()  # safe twice


@pytest.fixture(scope="module")
def trt_backend(tmp_path_factory):
    ok, why = available()
    if not ok:
        pytest.skip(f"TensorRT backend unavailable: {why}")
    state = tmp_path_factory.mktemp("state")
    backend = TensorRtBackend(load_artifact(ARTIFACT), BackendOptions(state_dir=state))
    backend.open()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def vtest_frames():
    cap = cv2.VideoCapture(str(ROOT / "samples" / "vtest.avi"))
    frames = [cap.read()[1] for _ in range(12)]
    cap.release()
    return frames


@pytest.mark.gpu
def test_outputs_agree_with_onnxruntime(trt_backend, vtest_frames):
    from lepton_edge.backends.onnxruntime import OnnxRuntimeBackend

    ort = OnnxRuntimeBackend(load_artifact(ARTIFACT), BackendOptions())
    ort.open()
    h, w = vtest_frames[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    box = Letterbox(plan)
    buf = box.new_buffer()
    for frame in vtest_frames[:3]:
        box(frame, buf[0])
        want = ort.submit(buf).wait()[0]
        got = trt_backend.submit_image(frame, plan).wait()[0]
        assert got.shape == want.shape == (1, 84, 5376)
        # TF32 and fused kernels: boxes within a pixel, class scores within 0.02.
        assert np.abs(got[0, :4] - want[0, :4]).max() < 1.0
        assert np.abs(got[0, 4:] - want[0, 4:]).max() < 0.02


@pytest.mark.gpu
def test_gpu_letterbox_path_agrees_with_cpu_letterbox_path(trt_backend, vtest_frames):
    h, w = vtest_frames[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    box = Letterbox(plan, trt_backend.input.dtype)
    buf = box.new_buffer()
    for frame in vtest_frames[:3]:
        box(frame, buf[0])
        cpu = trt_backend.submit(buf).wait()[0]
        gpu = trt_backend.submit_image(frame, plan).wait()[0]
        assert np.abs(cpu[0, 4:] - gpu[0, 4:]).max() < 0.02


@pytest.mark.gpu
def test_two_batches_in_flight_and_no_allocation_per_frame(trt_backend, vtest_frames):
    from lepton_edge.backends.tensorrt.cuda.buffers import ALLOCATIONS

    assert isinstance(trt_backend, ImageInputBackend)
    assert trt_backend.max_in_flight == 2
    h, w = vtest_frames[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    alone = [trt_backend.submit_image(f, plan).wait()[0] for f in vtest_frames[:2]]
    before = dict(ALLOCATIONS)
    results = []
    pending = []
    for frame in vtest_frames:
        pending.append(trt_backend.submit_image(frame, plan))
        if len(pending) == trt_backend.max_in_flight:
            results.append(pending.pop(0).wait()[0])
    results += [p.wait()[0] for p in pending]
    assert dict(ALLOCATIONS) == before, "a frame allocated CUDA memory"
    assert len(results) == len(vtest_frames)
    for a, b in zip(alone, results[:2], strict=True):
        assert np.array_equal(a, b)  # overlapping batches do not mix buffers


@pytest.mark.gpu
def test_waiting_on_a_reused_slot_is_an_error(trt_backend, vtest_frames):
    h, w = vtest_frames[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    first = trt_backend.submit_image(vtest_frames[0], plan)
    later = [trt_backend.submit_image(f, plan) for f in vtest_frames[1:3]]
    with pytest.raises(RuntimeError, match="max_in_flight"):
        first.wait()
    for handle in later:
        handle.wait()


@pytest.mark.gpu
def test_other_source_shapes_use_their_own_buffers(trt_backend):
    cap = cv2.VideoCapture(str(ROOT / "samples" / "bikes.mp4"))
    frame = cap.read()[1]
    cap.release()
    plan = plan_letterbox(frame.shape[1], frame.shape[0], 640)  # 640x272 -> 640x288
    out = trt_backend.submit_image(frame, plan).wait()[0]
    assert out.shape == (1, 84, 80 * 36 + 40 * 18 + 20 * 9)  # strides 8, 16, 32


@pytest.mark.gpu
def test_fp16_plan_agrees_with_onnxruntime_float(tmp_path, vtest_frames):
    """precision: fp16 builds the plan from model.fp16.onnx (half input, the letterbox_f16
    kernel) and its detections' raw outputs stay close to float's."""
    from lepton_edge.backends.onnxruntime import OnnxRuntimeBackend

    ok, why = available()
    if not ok:
        pytest.skip(f"TensorRT backend unavailable: {why}")
    art = load_artifact(ARTIFACT)
    backend = TensorRtBackend(art, BackendOptions(precision="fp16", state_dir=tmp_path))
    ort = OnnxRuntimeBackend(art, BackendOptions())
    with backend, ort:
        assert backend.model_path.name == "model.fp16.onnx"
        assert backend.input.dtype == np.float16
        h, w = vtest_frames[0].shape[:2]
        plan = plan_letterbox(w, h, 640)
        box = Letterbox(plan)
        buf = box.new_buffer()
        for frame in vtest_frames[:3]:
            box(frame, buf[0])
            want = ort.submit(buf).wait()[0]
            got = backend.submit_image(frame, plan).wait()[0]
            assert got.dtype == np.float32 and got.shape == want.shape
            assert np.abs(got[0, 4:] - want[0, 4:]).max() < 0.05
