from __future__ import annotations

import cv2
import numpy as np
import pytest

from lepton_edge.preprocess import PAD_VALUE, Letterbox, letterbox, plan_letterbox

from .conftest import BIKES, VTEST


@pytest.mark.parametrize(("src", "dst"), [
    ((768, 576), (640, 512)),   # a 4:3 camera: minimal padding, not 640x640
    ((640, 272), (640, 288)),
    ((640, 640), (640, 640)),
    ((1920, 1080), (640, 384)),
    ((576, 768), (512, 640)),
    ((101, 37), (640, 256)),
])
def test_dynamic_letterbox_shapes(src: tuple[int, int], dst: tuple[int, int]) -> None:
    p = plan_letterbox(*src, 640)
    assert (p.dst_w, p.dst_h) == dst
    assert p.dst_w % 32 == 0 and p.dst_h % 32 == 0
    assert max(p.new_w, p.new_h) == 640


def test_fixed_shape_fits_into_the_model_input() -> None:
    p = plan_letterbox(768, 576, fixed=(640, 640))
    assert (p.dst_w, p.dst_h, p.new_w, p.new_h, p.pad_x, p.pad_y) == (640, 640, 640, 480, 0, 80)


@pytest.mark.parametrize(("w", "h"), [(0, 10), (10, -1)])
def test_bad_sizes_are_refused(w: int, h: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        plan_letterbox(w, h)


def test_size_must_be_a_stride_multiple() -> None:
    with pytest.raises(ValueError, match="multiple of the model stride"):
        plan_letterbox(100, 100, 650)


def _reference(frame: np.ndarray, size: int) -> np.ndarray:
    """Straightforward letterbox written independently: resize, pad, RGB, /255, CHW."""
    p = plan_letterbox(frame.shape[1], frame.shape[0], size)
    canvas = np.full((p.dst_h, p.dst_w, 3), PAD_VALUE, np.uint8)
    canvas[p.pad_y:p.pad_y + p.new_h, p.pad_x:p.pad_x + p.new_w] = cv2.resize(
        frame, (p.new_w, p.new_h), interpolation=cv2.INTER_LINEAR)
    return (canvas[:, :, ::-1].transpose(2, 0, 1) / 255.0).astype(np.float32)


@pytest.mark.parametrize("clip", [VTEST, BIKES])
def test_matches_a_reference_on_real_frames(clip) -> None:
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    assert ok
    tensor, plan = letterbox(frame)
    np.testing.assert_allclose(tensor[0], _reference(frame, 640), atol=1e-6)
    # boxes map back: the image corners land on the source corners
    corners = np.array([[plan.pad_x, plan.pad_y, plan.pad_x + plan.new_w,
                         plan.pad_y + plan.new_h]], np.float32)
    np.testing.assert_allclose(plan.to_source(corners)[0],
                               [0, 0, frame.shape[1], frame.shape[0]], atol=1.0)


def test_buffers_are_reused_and_padding_rewritten() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (576, 768, 3), np.uint8)
    box = Letterbox(plan_letterbox(768, 576))
    buf = box.new_buffer()
    buf[...] = 7.0  # a dirty buffer: the letterbox must not rely on a fresh one
    out = box(frame, buf[0])
    assert out is buf[0] or np.shares_memory(out, buf)
    np.testing.assert_allclose(buf[0], _reference(frame, 640), atol=1e-6)


def test_wrong_frame_size_is_refused() -> None:
    box = Letterbox(plan_letterbox(768, 576))
    with pytest.raises(ValueError, match="planned for 768x576"):
        box(np.zeros((10, 10, 3), np.uint8), box.new_buffer()[0])
