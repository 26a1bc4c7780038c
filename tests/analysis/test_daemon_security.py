"""The security analyser inside the real daemon: vtest.avi through ONNX Runtime, a zone and a
line across the walkway, events over real ZeroMQ to a real subscriber, snapshots on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from lepton_edge.messages import DetectionMessage, EventMessage, HealthMessage
from lepton_edge.subscribe import Subscriber
from tests.conftest import VTEST, write_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("trackers") is None,
                                reason="tracking needs the trackers package: "
                                       "pip install 'lepton-edge[analysis]'")

CAMERA = {
    "id": "plaza", "url": str(VTEST), "mode": "bench", "max_frames": 200,
    "track": {"classes": ["person", "car", "truck"], "class_groups": [["car", "truck"]]},
    "zones": [{"id": "walkway", "polygon": [[0.0, 0.45], [1.0, 0.45], [1.0, 1.0], [0.0, 1.0]],
               "classes": ["person"]}],
    "lines": [{"id": "crossing", "points": [[0.5, 0.3], [0.5, 1.0]]}],
    "events": {"labels": ["person"]},
}


def test_events_start_and_end_in_pairs_with_snapshots_and_track_ids(tmp_path: Path,
                                                                   start_daemon) -> None:
    config = write_config(tmp_path / "cam.yaml", cameras=[CAMERA])
    daemon = start_daemon(config, "--wait-subscribers", "3")
    endpoint = yaml.safe_load(config.read_text())["publish"]["endpoint"]
    events: list[EventMessage] = []
    frames: list[DetectionMessage] = []
    with Subscriber(endpoint) as sub:
        for msg in sub.messages(timeout=120):
            if isinstance(msg, EventMessage):
                events.append(msg)
            elif isinstance(msg, DetectionMessage):
                frames.append(msg)
            elif isinstance(msg, HealthMessage) and msg.state == "stopping":
                break
    assert daemon.wait(60) == 0, daemon.stderr()
    assert len(frames) == 200
    tracked = [d.track_id for m in frames for d in m.detections if d.track_id is not None]
    assert len(set(tracked)) >= 5  # people walking through get ids that persist
    by_id: dict[str, list[str]] = {}
    for e in events:
        by_id.setdefault(e.event_id, []).append(e.type)
    assert len(by_id) >= 3
    for types in by_id.values():
        assert types[0] == "start" and types[-1] == "end"
        assert types.count("start") == 1 and types.count("end") == 1
    starts = [e for e in events if e.type == "start"]
    assert len({e.track_id for e in starts}) == len(starts)  # no track starts two events
    ends = [e for e in events if e.type == "end"]
    assert all(e.reason in ("left", "stopping") and e.ts_end is not None for e in ends)
    assert any("walkway" in e.entered_zones for e in events)
    snaps = tmp_path / "state" / "snapshots"
    named = {e.snapshot for e in events if e.snapshot}
    assert named and all((snaps / n).is_file() for n in named)
