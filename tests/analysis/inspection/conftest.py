"""Fixtures of the inspection tests: the parts clip, the detector (opened once), a station
factory that closes what it built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lepton_edge.analysis.inspection.station import InspectConfig, Station, build_station
from tests.support.inspection_rig import Collector, Detector, make_parts_video, read_video

PARTS = ("dog", "horses", "giraffe")
FRAMES_EACH = 10  # per part in the clip, at 10 fps: a part passes the camera every second


@pytest.fixture(scope="session")
def detector() -> Iterator[Detector]:
    d = Detector()
    yield d
    d.close()


@pytest.fixture(scope="session")
def parts_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path = tmp_path_factory.mktemp("clip") / "parts.avi"
    return read_video(make_parts_video(path, PARTS, FRAMES_EACH, fps=10))


@pytest.fixture(scope="session")
def dog_clip(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    path = tmp_path_factory.mktemp("clip") / "dog.avi"
    return read_video(make_parts_video(path, ("dog",), 3, fps=10))


def dog_rule(**extra: Any) -> dict[str, Any]:
    """The known-answer rule: exactly one dog and at least one bicycle, anywhere."""
    return {"rois": [{"id": "frame", "min_score": 0.4,
                      "count": [{"label": "dog", "exact": 1}, {"label": "bicycle", "min": 1}]}],
            **extra}


@pytest.fixture
def make_station(tmp_path: Path, detector: Detector) -> Iterator[Any]:
    built: list[Station] = []

    def make(cfg: dict[str, Any], camera: str = "line-1",
             state_dir: Path | None = None) -> tuple[Station, Collector]:
        sink = Collector()
        station = build_station(camera, InspectConfig.model_validate(cfg), sink,
                                state_dir or tmp_path / "state", labels=detector.labels)
        built.append(station)
        return station, sink

    yield make
    for s in built:
        s.close("stopping")
