"""The CUDA letterbox kernel against the CPU letterbox, on real frames of both sample videos.

Sources at their own size and at odd sizes, dynamic (minimal padding) and fixed model inputs,
odd model inputs, float32 and float16 outputs. The bar is 1/255 after normalization (cv2 uses
fixed-point weights, the kernel exact bilinear ones); float16 adds its own rounding (2^-11 of
values below 1, on both sides)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox

TOL = {np.float32: 1 / 255 + 1e-6, np.float16: 1 / 255 + 2.0**-10}
SOURCE_SIZES = [None, (767, 575), (641, 271), (333, 251), (99, 301), (1001, 577)]
PLANS = [
    {"size": 640},
    {"size": 320},
    {"size": 640, "fixed": (640, 640)},
    {"size": 640, "fixed": (481, 637)},  # odd model input, odd padding
]


def resized(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None:
        return frame
    return np.ascontiguousarray(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("plan_kw", PLANS, ids=lambda k: "-".join(map(str, k.values())))
@pytest.mark.parametrize("src_size", SOURCE_SIZES, ids=lambda s: "native" if s is None
                         else f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("video", ["vtest", "bikes"])
def test_kernel_matches_cpu_letterbox(gpu, frames, video, src_size, plan_kw, dtype):
    from lepton_edge.backends.tensorrt.cuda.buffers import DeviceLetterbox

    images = [resized(f, src_size) for f in frames[video]]
    h, w = images[0].shape[:2]
    plan = plan_letterbox(w, h, **plan_kw)
    cpu = Letterbox(plan, dtype)
    want = cpu.new_buffer()[0]
    box = DeviceLetterbox(gpu, plan, dtype)
    try:
        for image in images:
            cpu(image, want)
            got = box(image)
            assert got.dtype == np.dtype(dtype) and got.shape == want.shape
            diff = np.abs(got.astype(np.float32) - want.astype(np.float32))
            assert diff.max() <= TOL[dtype], (
                f"{video} {w}x{h} -> {plan.dst_w}x{plan.dst_h}: max diff "
                f"{diff.max() * 255:.3f}/255 at {np.unravel_index(diff.argmax(), diff.shape)}")
            assert diff.mean() < 0.25 / 255
    finally:
        box.close()


@pytest.mark.parametrize("video", ["vtest", "bikes"])
def test_mapped_and_pinned_paths_give_identical_results(gpu, frames, video):
    from lepton_edge.backends.tensorrt.cuda.buffers import DeviceLetterbox

    h, w = frames[video][0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    mapped = DeviceLetterbox(gpu, plan, mode="mapped")
    pinned = DeviceLetterbox(gpu, plan, mode="pinned")
    try:
        assert (mapped.frame.mode, pinned.frame.mode) == ("mapped", "pinned")
        for image in frames[video]:
            assert np.array_equal(mapped(image).copy(), pinned(image))
    finally:
        mapped.close()
        pinned.close()


@pytest.mark.parametrize("mode", ["mapped", "pinned"])
def test_buffers_are_reused_across_frames(gpu, vtest_run, mode):
    from lepton_edge.backends.tensorrt.cuda.buffers import ALLOCATIONS, DeviceLetterbox

    h, w = vtest_run[0].shape[:2]
    box = DeviceLetterbox(gpu, plan_letterbox(w, h, 640), mode=mode)
    try:
        first = box(vtest_run[0])
        before = dict(ALLOCATIONS)
        pointers = (box.frame.device_ptr, int(box.output), box.frame.host.ctypes.data)
        for image in vtest_run[1:]:
            out = box(image)
            assert out is first  # the same host tensor every frame
        assert dict(ALLOCATIONS) == before, "a frame allocated CUDA memory"
        assert pointers == (box.frame.device_ptr, int(box.output), box.frame.host.ctypes.data)
    finally:
        box.close()


def test_frame_captured_into_the_buffer_is_not_copied(gpu, vtest_run):
    """A capture that decodes straight into `frame.host` (cv2 `read(image=...)`) hands the
    kernel that memory as is."""
    from lepton_edge.backends.tensorrt.cuda.buffers import DeviceLetterbox

    h, w = vtest_run[0].shape[:2]
    plan = plan_letterbox(w, h, 640)
    box = DeviceLetterbox(gpu, plan)
    try:
        np.copyto(box.frame.host, vtest_run[3])
        got = box(box.frame.host).copy()
        cpu = Letterbox(plan)
        want = cpu.new_buffer()[0]
        cpu(vtest_run[3], want)
        assert np.abs(got - want).max() <= TOL[np.float32]
    finally:
        box.close()
