from __future__ import annotations

import numpy as np
import pytest

from lepton_edge.pipeline.nms import batched_nms, batched_nms_numpy, box_iou, nms


@pytest.mark.parametrize(("a", "b", "iou"), [
    ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),
    ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),
    ([0, 0, 10, 10], [2, 2, 8, 8], 36 / 100),
])
def test_box_iou(a, b, iou) -> None:
    got = box_iou(np.array([a], float), np.array([b], float))[0, 0]
    assert got == pytest.approx(iou)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.8, 0.9, 0.7])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]


def test_class_aware_nms_never_suppresses_across_classes() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.9, 0.8, 0.7])
    classes = np.array([0, 1, 0])
    assert sorted(batched_nms(boxes, scores, classes, 0.5).tolist()) == [0, 1]


def test_empty_input() -> None:
    assert batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), 0.5).size == 0


@pytest.mark.parametrize("n", [1, 2, 50, 376, 2000])
def test_opencv_nms_keeps_what_the_numpy_reference_keeps_in_the_same_order(n: int) -> None:
    rng = np.random.default_rng(n)
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, 150, (n, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0.3, 1.0, n).astype(np.float32)
    classes = rng.integers(0, 4, n)
    for iou in (0.3, 0.5, 0.7):
        assert batched_nms(boxes, scores, classes, iou).tolist() == \
            batched_nms_numpy(boxes, scores, classes, iou).tolist()
