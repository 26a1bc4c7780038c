"""ROI membership and rules, table-driven; config errors name the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from lepton_edge.analysis.inspection.rules import Roi, judge
from lepton_edge.analysis.inspection.station import InspectConfig
from lepton_edge.detections import Detections

LABELS = ("dog", "bicycle", "scratch")


def _dets(*rows: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    return Detections(np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
                      np.array([r[1] for r in rows], np.float32),
                      np.array([LABELS.index(r[0]) for r in rows], np.int32))


DOG = ("dog", 0.9, (10, 10, 50, 50))  # centre (30, 30)
DOG_FAINT = ("dog", 0.3, (60, 10, 90, 40))
BIKE_OUT = ("bicycle", 0.8, (200, 200, 260, 260))  # centre (230, 230)
SCRATCH = ("scratch", 0.7, (20, 60, 40, 80))


@pytest.mark.parametrize(("roi", "dets", "codes"), [
    ({"count": [{"label": "dog", "exact": 1}]}, [DOG], []),
    ({"count": [{"label": "dog", "exact": 1}]}, [DOG, DOG_FAINT], [("count", "== 1", 2)]),
    ({"count": [{"label": "dog", "exact": 1}], "min_score": 0.5}, [DOG, DOG_FAINT], []),
    ({"count": [{"label": "dog", "max": 0}]}, [DOG], [("count", "<= 0", 1)]),
    ({"count": [{"label": "dog", "min": 1, "max": 2}]}, [], [("count", "1..2", 0)]),
    ({"rect": [0, 0, 100, 100], "count": [{"label": "bicycle", "min": 1}]}, [DOG, BIKE_OUT],
     [("count", ">= 1", 0)]),
    ({"polygon": [[150, 150], [300, 150], [300, 300]], "count": [{"label": "bicycle",
                                                                  "min": 1}]},
     [BIKE_OUT], []),
    ({"forbidden": ["scratch"]}, [DOG, SCRATCH], [("forbidden", "== 0", 1)]),
    ({"rect": [0, 0, 45, 45], "membership": "inside", "count": [{"label": "dog", "min": 1}]},
     [DOG], [("count", ">= 1", 0)]),  # centre inside, box not
])
def test_rules(roi: dict[str, Any], dets: list[Any], codes: list[tuple[str, str, int]]) -> None:
    r = Roi.model_validate({"id": "tray", **roi})
    reasons, found = judge([r], _dets(*dets), LABELS, 320, 320)
    assert [(x.code, x.expected, x.found) for x in reasons] == codes
    assert all(x.roi == "tray" for x in reasons) and "tray" in found


@pytest.mark.parametrize(("roi", "message"), [
    ({"count": [{"label": "dog", "exact": 1, "min": 1}]}, "exact excludes min and max"),
    ({"count": [{"label": "dog"}]}, "give exact, min or max"),
    ({"count": [{"label": "dog", "min": 3, "max": 1}]}, r"min \(3\) must be <= max \(1\)"),
    ({"forbidden": []}, "at least one rule"),
    ({"rect": [10, 10, 5, 50], "forbidden": ["x"]}, "x1 < x2"),
    ({"rect": [0, 0, 5, 5], "polygon": [[0, 0], [1, 0], [1, 1]], "forbidden": ["x"]},
     "rect or polygon, not both"),
    ({"forbidden": ["x"], "colour": "red"}, "Extra inputs are not permitted"),
])
def test_bad_rois_are_refused(roi: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Roi.model_validate({"id": "tray", **roi})


def test_inspect_config_errors() -> None:
    base = {"triggers": [{"type": "interval", "every": 1}],
            "rois": [{"id": "a", "forbidden": ["x"]}]}
    InspectConfig.model_validate(base)
    with pytest.raises(ValidationError, match="used twice"):
        InspectConfig.model_validate({**base, "rois": base["rois"] * 2})
    with pytest.raises(ValidationError, match="must be longer than delay_ms"):
        InspectConfig.model_validate({**base, "delay_ms": 200, "deadline_ms": 150})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        InspectConfig.model_validate({**base, "triggers": [{"type": "laser"}]})
    with pytest.raises(ValidationError, match="overlaps the result coils"):
        InspectConfig.model_validate({**base, "plc": {"host": "plc", "ack_coil": 1}})


def test_crop_box_is_the_rois_bounding_box(tmp_path: Any) -> None:
    from lepton_edge.analysis.inspection.station import build_station

    rois = [{"id": "a", "rect": [100, 50, 200, 150], "forbidden": ["x"]},
            {"id": "b", "polygon": [[300.4, 60], [400, 80], [350, 220.2]], "forbidden": ["x"]}]
    cfg = InspectConfig.model_validate({"triggers": [{"type": "interval", "every": 3600}],
                                        "rois": rois, "crop": True})
    station = build_station("c", cfg, lambda o: None, tmp_path)
    try:
        assert station.crop_box == (100, 50, 400, 221)
    finally:
        station.close()
    with pytest.raises(ValidationError, match="needs a rect or polygon on every ROI"):
        InspectConfig.model_validate({"triggers": [{"type": "interval", "every": 1}],
                                      "rois": [{"id": "a", "forbidden": ["x"]}], "crop": True})
