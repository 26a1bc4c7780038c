"""The agreement score on hand-made detections: all classes, and only the frequent ones."""

from __future__ import annotations

import numpy as np
import pytest

from lepton_edge.compiler.accuracy import agreement, coco_map
from lepton_edge.detections import Detections

# 10 frames: class 0 has 2 boxes in each (20 reference boxes), class 1 one box in the first 3.
FRAMES = 10
FREQUENT, RARE = 0, 1


def _frame(i: int, *, frequent: bool = True, rare: bool = True, dx: float = 0.0,
           score: float = 0.9) -> Detections:
    boxes, classes = [], []
    if frequent:
        boxes += [[10 + dx, 10, 110 + dx, 110], [300 + dx, 50, 400 + dx, 150]]
        classes += [FREQUENT, FREQUENT]
    if rare and i < 3:
        boxes.append([500, 300, 600, 400])
        classes.append(RARE)
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.full(len(boxes), score, np.float32), np.asarray(classes, np.int32))


TRUTH = [_frame(i) for i in range(FRAMES)]
# Shifting a 100 px box by 31 px gives IoU 69/131 = 0.527: a match at IoU 0.50 only, so its
# AP50 is 1 and its AP50-95 is 1/10.
SHIFT = 31.0


@pytest.mark.parametrize(
    ("case", "candidate", "min_boxes", "expect"),
    [
        ("identical", [_frame(i) for i in range(FRAMES)], 20,
         (1.0, 1.0, 2, 1.0, 1.0, 1)),
        ("rare class missed", [_frame(i, rare=False) for i in range(FRAMES)], 20,
         (0.5, 0.5, 2, 1.0, 1.0, 1)),
        ("frequent class missed", [_frame(i, frequent=False) for i in range(FRAMES)], 20,
         (0.5, 0.5, 2, 0.0, 0.0, 1)),
        ("frequent boxes loose", [_frame(i, dx=SHIFT) for i in range(FRAMES)], 20,
         (1.0, 0.55, 2, 1.0, 0.1, 1)),
        ("both classes frequent enough", [_frame(i, rare=False) for i in range(FRAMES)], 3,
         (0.5, 0.5, 2, 0.5, 0.5, 2)),
        ("no class frequent enough", [_frame(i) for i in range(FRAMES)], 21,
         (1.0, 1.0, 2, None, None, 0)),
        ("nothing detected", [Detections.empty() for _ in range(FRAMES)], 20,
         (0.0, 0.0, 2, 0.0, 0.0, 1)),
    ],
)
def test_restricted_map_counts_only_classes_with_enough_reference_boxes(
        case: str, candidate: list[Detections], min_boxes: int,
        expect: tuple[float, float, int, float | None, float | None, int]) -> None:
    s = coco_map(TRUTH, candidate, min_class_boxes=min_boxes)
    map50, map50_95, classes, map50_min, map50_95_min, classes_min = expect
    assert (s.frames, s.boxes) == (FRAMES, 23), case
    assert s.map50 == pytest.approx(map50, abs=1e-3), case
    assert s.map50_95 == pytest.approx(map50_95, abs=1e-3), case
    assert (s.classes, s.classes_min) == (classes, classes_min), case
    for got, want in ((s.map50_min, map50_min), (s.map50_95_min, map50_95_min)):
        assert (got is None) if want is None else got == pytest.approx(want, abs=1e-3), case


def test_report_names_the_threshold_and_agreement_drops_low_score_reference_boxes() -> None:
    # Reference boxes under score 0.25 are not truth: the rare class scored 0.1 disappears.
    reference = [Detections(t.xyxy, np.where(t.class_id == RARE, 0.1, 0.9).astype(np.float32),
                            t.class_id) for t in TRUTH]
    s = agreement(reference, [_frame(i, rare=False) for i in range(FRAMES)])
    assert s.as_dict() == {"map50": 1.0, "map50_95": 1.0, "frames": FRAMES,
                           "reference_boxes": 20, "classes_scored": 1, "map50_min20": 1.0,
                           "map50_95_min20": 1.0, "classes_scored_min20": 1,
                           "map50_agnostic": 1.0}
    with pytest.raises(ValueError, match="10 reference frames but 9"):
        agreement(reference, reference[:9])


def test_class_agnostic_map_counts_a_box_found_with_the_wrong_class() -> None:
    """The rare boxes found as the frequent class: per class, the rare one is missed (and the
    frequent one gets 3 false positives); class-agnostic, every box is found."""
    swapped = [Detections(t.xyxy, t.score, np.full(len(t), FREQUENT, np.int32)) for t in TRUTH]
    s = coco_map(TRUTH, swapped)
    assert s.map50 < 0.51 and s.map50_agnostic == pytest.approx(1.0, abs=1e-3)
    loose = coco_map(TRUTH, [_frame(i, dx=60.0) for i in range(FRAMES)])  # IoU 0.25: no match
    assert 0.0 < loose.map50_agnostic < 0.2  # the 3 rare boxes only, among 20 misses


def test_the_gate_metric_falls_back_to_all_classes_without_a_frequent_class() -> None:
    frequent = coco_map(TRUTH, [_frame(i, rare=False) for i in range(FRAMES)])
    assert (frequent.gate_metric, frequent.gate_value) == ("map50_min20", frequent.map50_min)
    rare = coco_map(TRUTH, [_frame(i, rare=False) for i in range(FRAMES)], min_class_boxes=21)
    assert (rare.gate_metric, rare.gate_value) == ("map50", rare.map50)
