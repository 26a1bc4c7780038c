"""Decode through the real model: the classic photos are detected where they are."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lepton_edge.artifact import load_artifact
from lepton_edge.backends import create_backend
from lepton_edge.backends.base import BackendOptions
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8, get_decoder
from lepton_edge.pipeline.nms import box_iou
from lepton_edge.pipeline.preprocess import letterbox
from tests.conftest import ENGINE, IMAGES


@pytest.fixture(scope="module")
def detect():
    art = load_artifact(ENGINE)
    with create_backend("onnxruntime", art, BackendOptions(threads=2)) as backend:
        def run(name: str, **settings):
            img = cv2.imread(str(IMAGES / name))
            tensor, plan = letterbox(img)
            out = backend.submit(tensor).wait()[0][0]
            dets = decode_yolov8(out, plan, DecodeSettings(**settings))
            return [(art.classes[c], float(s), b) for c, s, b in
                    zip(dets.class_id, dets.score, dets.xyxy, strict=True)]
        yield run


# Boxes from darknet's reference output of these photos, in source pixels (x1, y1, x2, y2).
EXPECTED = {
    "dog.jpg": [("dog", (130, 220, 310, 540)), ("bicycle", (130, 140, 570, 420)),
                (("car", "truck"), (465, 75, 690, 170))],
    "person.jpg": [("person", (190, 100, 275, 375)), ("horse", (405, 140, 600, 345)),
                   ("dog", (60, 265, 205, 345))],
    "horses.jpg": [("horse", None)],
    "giraffe.jpg": [("giraffe", None)],
    "eagle.jpg": [("bird", None)],
}


@pytest.mark.parametrize("photo", sorted(EXPECTED))
def test_known_objects_are_found_where_they_are(detect, photo: str) -> None:
    found = detect(photo, score=0.35)
    for label, box in EXPECTED[photo]:
        labels = label if isinstance(label, tuple) else (label,)
        hits = [(lab, b) for lab, _, b in found if lab in labels]
        assert hits, f"{photo}: no {label} in {[(lab, round(s, 2)) for lab, s, _ in found]}"
        if box is not None:
            best = max(box_iou(np.array([box], float), np.array([b], float))[0, 0]
                       for _, b in hits)
            assert best > 0.8, f"{photo}: {label} box IoU {best:.2f}"


def test_class_filter_and_score_floor(detect) -> None:
    only_dogs = detect("dog.jpg", score=0.35, class_ids=(16,))
    assert [lab for lab, _, _ in only_dogs] == ["dog"]
    assert all(s >= 0.9 for _, s, _ in detect("dog.jpg", score=0.9))


def test_max_detections_caps_the_output(detect) -> None:
    assert len(detect("person.jpg", score=0.01, max_detections=2)) == 2


def test_unknown_family_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no decoder for model family 'yolov5'"):
        get_decoder("yolov5")
