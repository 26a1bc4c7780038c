"""Analysis fixtures: the bundled model's detections of each bundled clip, computed once (real
ONNX Runtime on engines/yolov8n) and cached under .cache/analysis/ across sessions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lepton_edge.analysis.replay import ClipDetections
from tests.conftest import BIKES, ENGINE, REPO, VTEST


def _detect(clip: Path) -> ClipDetections:
    from lepton_edge.analysis.replay import detect_clip

    return detect_clip(clip, ENGINE, cache=REPO / ".cache" / "analysis")


@pytest.fixture(scope="session")
def vtest_dets() -> ClipDetections:
    return _detect(VTEST)


@pytest.fixture(scope="session")
def bikes_dets() -> ClipDetections:
    return _detect(BIKES)


@pytest.fixture
def collect() -> Callable[[], tuple[list[object], Callable[[object], None]]]:
    def make() -> tuple[list[object], Callable[[object], None]]:
        out: list[object] = []
        return out, out.append
    return make
