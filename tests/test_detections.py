from __future__ import annotations

import numpy as np
import pytest

from lepton_edge.detections import Detections


def make(n: int) -> Detections:
    return Detections(np.arange(n * 4, dtype=np.float32).reshape(n, 4),
                      np.linspace(0.1, 0.9, n, dtype=np.float32), np.arange(n, dtype=np.int32))


@pytest.mark.parametrize(("xyxy", "score", "cls", "error"), [
    ((3, 5), (3,), (3,), r"xyxy must have shape \(N, 4\), got \(3, 5\)"),
    ((3, 4), (2,), (3,), r"score must have shape \(3,\), got \(2,\)"),
    ((3, 4), (3,), (3, 1), r"class_id must have shape \(3,\), got \(3, 1\)"),
])
def test_shapes_are_validated_with_expected_and_actual(xyxy, score, cls, error) -> None:
    with pytest.raises(ValueError, match=error):
        Detections(np.zeros(xyxy), np.zeros(score), np.zeros(cls, int))


def test_empty_len_and_mask_indexing() -> None:
    assert len(Detections.empty()) == 0
    d = make(5)
    kept = d[d.score > 0.5]
    assert len(kept) == 2 and kept.class_id.tolist() == [3, 4]
    assert len(d[0]) == 1 and len(d[-1]) == 1 and d[-1].class_id.tolist() == [4]
