"""The station on real frames and the real detector: known answers on the bundled photos, one
verdict per trigger through a lost camera, a trigger storm, deadlines and backend errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lepton_edge.sinks.verdict_log import VerdictLog
from tests.analysis.inspection.conftest import FRAMES_EACH, PARTS, dog_rule
from tests.support.inspection_rig import Rig

from lepton_edge.analysis.inspection.commands import send_trigger  # isort: skip
from tests.conftest import free_port  # isort: skip


def _wait_index(rig: Rig, pred: Any, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.index >= 0 and pred(rig.index):
            return rig.index
        time.sleep(0.002)
    raise AssertionError("the rig never reached the frame wanted")


def test_dog_passes_horses_and_giraffe_fail_with_reasons(make_station: Any, detector: Any,
                                                         parts_clip: Any,
                                                         tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    station, sink = make_station(dog_rule(
        triggers=[{"type": "software", "endpoint": endpoint}], deadline_ms=3000,
        evidence={"sample_passes": 1}))
    rig = Rig(station, parts_clip, detector, fps=30, video_fps=10).start()
    expected: dict[int, str] = {}
    try:
        for _ in range(2 * len(PARTS)):  # two rounds of the three parts
            # the middle of the next part: 3 clip frames into it
            idx = _wait_index(rig, lambda i: rig.video_index(i) % FRAMES_EACH == 3)
            part = PARTS[rig.part_at(idx, FRAMES_EACH)]
            reply = send_trigger(endpoint, "line-1")
            expected[reply["trigger_id"]] = part
            _wait_index(rig, lambda i, j=idx: i > j + 9)  # off this part
        verdicts = sink.wait_for(len(expected), timeout=20)
    finally:
        rig.stop()
    by_id = {v.trigger_id: v for v in verdicts}
    assert sorted(by_id) == sorted(expected) and len(verdicts) == len(expected)
    for tid, part in expected.items():
        v = by_id[tid].to_dict()
        if part == "dog":
            assert v["verdict"] == "pass", (v, by_id[tid].reasons)
            assert v["reasons"] == [] and v["result_code"] == 1
            labels = sorted(d["label"] for d in v["rois"]["frame"])
            assert labels.count("dog") == 1 and "bicycle" in labels
        else:
            assert v["verdict"] == "fail", v
            assert [(r["code"], r["rule"], r["expected"], r["found"]) for r in v["reasons"]] == [
                ("count", "count dog", "== 1", 0), ("count", "count bicycle", ">= 1", 0)]
            assert v["result_code"] == 2
        assert v["trigger_id"] == tid and v["frame"] is not None and v["latency_ms"] > 0
        assert v["evidence"] == f"line-1-{tid:08d}-{v['verdict']}.jpg"
    lat = sorted(v.latency_ms for v in verdicts)
    print(f"\nphotos: {len(verdicts)} verdicts on {detector.name}; trigger->verdict "
          f"p50 {lat[len(lat) // 2]:.1f} ms, max {lat[-1]:.1f} ms")
    c = station.counters
    assert (c["pass"], c["fail"], c["error"]) == (2, 4, 0)
    assert all(v.image is None for v in verdicts)  # frames go to the evidence writer only
    station.close("stopping")  # flushes the evidence
    folder = tmp_path / "state" / "evidence" / "line-1"
    assert sorted(p.name for p in folder.glob("*.jpg")) == sorted(
        v.evidence for v in verdicts)
    with VerdictLog(tmp_path / "state" / "verdicts.sqlite") as vlog:
        logged = {r["trigger_id"]: r["verdict"] for r in vlog.rows("line-1")}
    assert logged == {v.trigger_id: v.verdict for v in verdicts}


def test_every_trigger_answered_error_while_the_camera_is_lost(make_station: Any,
                                                               detector: Any,
                                                               dog_clip: Any) -> None:
    station, sink = make_station(dog_rule(triggers=[{"type": "interval", "every": 0.1}],
                                          deadline_ms=1500, max_pending=4))
    rig = Rig(station, dog_clip, detector, fps=30).start()
    try:
        time.sleep(1.05)
        t_lost = time.time()
        rig.lose_camera()  # unplugged mid-run
        time.sleep(1.0)
        t_back = time.time()
        rig.restore_camera()
        time.sleep(1.5)
    finally:
        station.close("stopping")  # triggers stop first: none waits on a stopped camera
        rig.stop()
    fired = station.counters["triggers"]
    verdicts = sink.items
    assert sorted(v.trigger_id for v in verdicts) == list(range(1, fired + 1))  # 1 each
    code = {v.trigger_id: (v.reasons[0].code if v.reasons else v.verdict) for v in verdicts}
    during = [v for v in verdicts if t_lost < v.ts_trigger < t_back]
    before = [v for v in verdicts if v.ts_trigger < t_lost]
    after = [v for v in verdicts if v.ts_trigger > t_back]
    assert len(during) >= 8
    assert all(v.verdict == "error" and code[v.trigger_id] == "camera_lost" for v in during)
    # before the loss: judged, or waiting for a frame when the camera went (answered too)
    assert {code[v.trigger_id] for v in before} <= {"pass", "camera_lost", "overrun"}
    assert sum(code[v.trigger_id] == "pass" for v in before) >= 3
    assert sum(code[v.trigger_id] == "pass" for v in after) >= 3
    assert "camera_lost" not in {code[v.trigger_id] for v in after}
    c = station.counters
    assert c["camera_lost"] == sum(x == "camera_lost" for x in code.values()) >= 8
    print(f"\ncamera lost: {fired} triggers, {len(during)} during the outage, all answered")


def test_a_trigger_storm_is_answered_trigger_by_trigger(make_station: Any, detector: Any,
                                                        dog_clip: Any) -> None:
    station, sink = make_station(dog_rule(triggers=[{"type": "interval", "every": 3600}],
                                          deadline_ms=2000, max_pending=2))
    rig = Rig(station, dog_clip, detector, fps=30).start()
    fired: list[int] = []
    lock = threading.Lock()

    def storm() -> None:
        for _ in range(50):
            tid = station.fire("software")
            with lock:
                fired.append(tid)

    threads = [threading.Thread(target=storm) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        verdicts = sink.wait_for(200, timeout=20)
    finally:
        rig.stop()
    assert sorted(fired) == list(range(1, 201))
    assert sorted(v.trigger_id for v in verdicts) == list(range(1, 201))
    overruns = [v for v in verdicts if v.reasons and v.reasons[0].code == "overrun"]
    judged = [v for v in verdicts if v.verdict == "pass"]
    assert len(overruns) + len(judged) == 200 and len(judged) >= 2
    assert all(v.verdict == "error" and v.result_code == 12 for v in overruns)
    assert station.counters["overrun"] == len(overruns)
    print(f"\nstorm: 200 triggers from 4 threads: {len(judged)} judged, {len(overruns)} overrun")


def test_no_frame_in_time_is_a_fail_timeout(make_station: Any) -> None:
    station, sink = make_station(dog_rule(triggers=[{"type": "interval", "every": 3600}],
                                          deadline_ms=80))
    tid = station.fire("software")  # no camera feeds this station
    [v] = sink.wait_for(1, timeout=5)
    assert (v.trigger_id, v.verdict, v.reasons[0].code, v.result_code) == (tid, "fail",
                                                                          "timeout", 4)
    assert 80 <= v.latency_ms < 300
    assert station.counters["timeout"] == 1


def test_a_frame_admitted_then_lost_in_inference_is_an_error(make_station: Any) -> None:
    station, sink = make_station(dog_rule(triggers=[{"type": "interval", "every": 3600}],
                                          deadline_ms=5000))
    tid = station.fire("software")
    image = np.zeros((48, 64, 3), np.uint8)
    assert not station.admit(image, 0, time.monotonic() - 1.0)  # captured before the trigger
    assert station.admit(image, 1, time.monotonic())
    assert not station.admit(image, 2, time.monotonic())  # the trigger has its frame
    station.on_error(1, "the backend raised RuntimeError")
    [v] = sink.wait_for(1, timeout=5)
    assert (v.trigger_id, v.verdict, v.reasons[0].code, v.frame) == (tid, "error", "backend", 1)


def test_close_answers_what_is_pending_and_the_log_holds_it(make_station: Any,
                                                            tmp_path: Path) -> None:
    station, sink = make_station(dog_rule(triggers=[{"type": "interval", "every": 3600}],
                                          deadline_ms=5000, max_pending=3))
    ids = [station.fire("software") for _ in range(3)]
    station.close("stopping")
    station.close("stopping")  # safe twice
    assert sorted(v.trigger_id for v in sink.items) == ids
    assert all(v.reasons[0].code == "stopping" for v in sink.items)
    with VerdictLog(tmp_path / "state" / "verdicts.sqlite") as vlog:
        rows = list(vlog.rows("line-1"))
    assert [(r["trigger_id"], r["verdict"], r["reason"]) for r in rows] == [
        (i, "error", "stopping") for i in ids]


@pytest.mark.parametrize("labels_ok", [False])
def test_a_rule_naming_an_unknown_class_is_refused(make_station: Any, labels_ok: bool) -> None:
    from lepton_edge.errors import ConfigError

    cfg = dog_rule(triggers=[{"type": "interval", "every": 3600}])
    cfg["rois"][0]["count"][0]["label"] = "dgo"
    with pytest.raises(ConfigError, match="does not detect dgo"):
        make_station(cfg)
