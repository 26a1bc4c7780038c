from __future__ import annotations

import cv2
import numpy as np
import pytest

from lepton_edge.pipeline.preprocess import (
    PAD_VALUE,
    Letterbox,
    letterbox,
    padded_buffer,
    pixels_from_tensor,
    plan_letterbox,
)
from tests.conftest import BIKES, VTEST


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


def _reference_pixels(frame: np.ndarray, size: int) -> np.ndarray:
    p = plan_letterbox(frame.shape[1], frame.shape[0], size)
    canvas = np.full((p.dst_h, p.dst_w, 3), PAD_VALUE, np.uint8)
    canvas[p.pad_y:p.pad_y + p.new_h, p.pad_x:p.pad_x + p.new_w] = cv2.resize(
        frame, (p.new_w, p.new_h), interpolation=cv2.INTER_LINEAR)
    return canvas


@pytest.mark.parametrize(("w", "h"), [(768, 576), (640, 272), (640, 480), (300, 500)])
def test_pixel_layout_is_the_padded_bgr_frame_and_the_same_numbers(w: int, h: int) -> None:
    """NHWC uint8: the resize lands in the padded buffer itself (no copy), a dirty buffer is
    fully rewritten, and it holds exactly the pixels the float NCHW tensor is made from."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (h, w, 3), np.uint8)
    plan = plan_letterbox(w, h)
    box = Letterbox(plan, np.uint8, "NHWC")
    buf = box.new_buffer()
    assert buf.shape == (1, plan.dst_h, plan.dst_w, 3) and buf.dtype == np.uint8
    buf[...] = 7
    out = box(frame, buf[0])
    assert np.shares_memory(out, buf)
    np.testing.assert_array_equal(buf[0], _reference_pixels(frame, 640))
    tensor, _ = letterbox(frame)
    np.testing.assert_array_equal(pixels_from_tensor(tensor), buf)


def test_pixel_layout_takes_only_uint8_and_known_layouts() -> None:
    plan = plan_letterbox(768, 576)
    with pytest.raises(ValueError, match="NHWC layout holds uint8"):
        Letterbox(plan, np.float32, "NHWC")
    with pytest.raises(ValueError, match="layout must be one of NCHW, NHWC"):
        Letterbox(plan, np.float32, "CHW")
    with pytest.raises(ValueError, match="expected \\(512, 640, 3\\)"):
        box = Letterbox(plan, np.uint8, "NHWC")
        box(np.zeros((576, 768, 3), np.uint8), np.zeros((3, 512, 640), np.uint8))


def test_padded_buffers_are_gray_in_both_layouts() -> None:
    assert padded_buffer(32, 64, np.uint8, "NHWC").shape == (1, 32, 64, 3)
    assert (padded_buffer(32, 64, np.uint8, "NHWC") == PAD_VALUE).all()
    np.testing.assert_allclose(padded_buffer(32, 64, np.float16, "NCHW", 2),
                               PAD_VALUE / 255, atol=1e-3)
    assert padded_buffer(32, 64, np.float16, "NCHW", 2).shape == (2, 3, 32, 64)


def test_boxes_map_back_clipped_to_the_source() -> None:
    # 768x576 -> 640x512 (scale 5/6, 16 rows of padding above and below): a box reaching
    # into the padding and past the right edge ends at the frame's edges
    plan = plan_letterbox(768, 576, 640)
    got = plan.to_source(np.array([[-10, 0, 700, 512], [320, 256, 330, 266]], np.float32))
    np.testing.assert_allclose(got, [[0, 0, 768, 576], [384, 288, 396, 300]], atol=1e-3)
