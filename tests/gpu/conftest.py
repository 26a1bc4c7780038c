"""GPU test fixtures: every test here is marked `gpu` and skips with the exact reason when
CUDA, pycuda, the kernel compiler or TensorRT is missing (tests/gpu/run.sh runs them on a
GPU machine)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = {"vtest": ROOT / "samples" / "vtest.avi", "bikes": ROOT / "samples" / "bikes.mp4"}


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)


def gpu_or_skip():
    """A started `Gpu` with the letterbox kernel compiled, or pytest.skip(reason)."""
    from lepton_edge.backends.tensorrt.cuda import cuda_available
    from lepton_edge.errors import BackendUnavailableError

    ok, why = cuda_available()
    if not ok:
        pytest.skip(f"no CUDA: {why}")
    try:
        from lepton_edge.backends.tensorrt.cuda.buffers import Gpu, compiled_kernel

        gpu = Gpu.start()
        with gpu.active():
            compiled_kernel(gpu, "letterbox_f32")
    except BackendUnavailableError as err:
        pytest.skip(str(err))
    return gpu


@pytest.fixture(scope="session")
def gpu():
    return gpu_or_skip()


def read_frames(name: str, indices: tuple[int, ...]) -> list[np.ndarray]:
    """Frames `indices` of a bundled sample video (uint8 BGR)."""
    cap = cv2.VideoCapture(str(VIDEOS[name]))
    frames, i = [], 0
    try:
        while len(frames) < len(indices):
            ok, frame = cap.read()
            if not ok:
                raise AssertionError(f"{VIDEOS[name]} ended at frame {i}, wanted {indices}")
            if i in indices:
                frames.append(frame)
            i += 1
    finally:
        cap.release()
    return frames


@pytest.fixture(scope="session")
def frames():
    """Three real frames of each sample video, keyed by video name."""
    return {"vtest": read_frames("vtest", (0, 300, 700)),
            "bikes": read_frames("bikes", (0, 120, 240))}


@pytest.fixture(scope="session")
def vtest_run():
    """20 consecutive frames of vtest.avi (768x576)."""
    return read_frames("vtest", tuple(range(20)))
