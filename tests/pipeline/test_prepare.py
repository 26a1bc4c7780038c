"""The preparing stage: rings per source region, and a region crop whose boxes come back in
whole-frame pixels."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from lepton_edge.pipeline.prepare import Preparer
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox
from lepton_edge.pipeline.sources import Frame
from tests.conftest import VTEST
from tests.pipeline.test_runner import ScriptedBackend


@pytest.fixture(scope="module")
def frame() -> Frame:
    cap = cv2.VideoCapture(str(VTEST))
    ok, image = cap.read()
    cap.release()
    assert ok
    return Frame(camera="cam", index=0, image=image, t_capture=0.0, ts=0.0, read_ms=1.0)


def preparer() -> Preparer:
    backend = ScriptedBackend()
    backend.open()
    return Preparer(backend, 640, 32, None)


def test_a_crop_letterboxes_only_its_region_and_maps_boxes_to_the_whole_frame(frame) -> None:
    job = preparer()(frame, (400, 300, 720, 560))
    plan = job.plan
    assert (plan.src_w, plan.src_h, plan.off_x, plan.off_y) == (320, 260, 400, 300)
    # the tensor is the letterbox of the region alone, at the model's full 640 (upscaled 2x)
    alone = Letterbox(plan_letterbox(320, 260, 640), np.float32, "NCHW")
    want = alone.new_buffer()
    alone(np.ascontiguousarray(frame.image[300:560, 400:720]), want[0])
    np.testing.assert_array_equal(job.tensor, want)
    # a box over the whole model input is the whole region, in frame pixels
    full = np.array([[0, 0, plan.dst_w, plan.dst_h]], np.float32)
    np.testing.assert_allclose(plan.to_source(full), [[400, 300, 720, 560]], atol=1e-3)


def test_a_crop_is_clipped_to_the_frame_and_one_outside_infers_the_whole_frame(
        frame, caplog: pytest.LogCaptureFixture) -> None:
    h, w = frame.image.shape[:2]
    p = preparer()
    clipped = p(frame, (600, 400, 5000, 5000)).plan
    assert (clipped.off_x, clipped.off_y, clipped.src_w, clipped.src_h) == (600, 400, w - 600,
                                                                          h - 400)
    with caplog.at_level(logging.ERROR):
        outside = p(frame, (5000, 5000, 6000, 6000)).plan
        p(frame, (5000, 5000, 6000, 6000))
    assert (outside.off_x, outside.src_w, outside.src_h) == (0, w, h)
    errors = [r for r in caplog.records if "outside" in r.getMessage()]
    assert len(errors) == 1 and "inspect.rois" in errors[0].getMessage()  # said once


def test_each_region_keeps_its_own_ring(frame) -> None:
    p = preparer()
    a = [p(frame).tensor for _ in range(2)]
    b = p(frame, (0, 0, 320, 320)).tensor
    assert a[0] is not a[1]  # a ring, not one buffer
    assert b.shape != a[0].shape  # 320x320 letterboxes to 640x640; the frame to 640x512
