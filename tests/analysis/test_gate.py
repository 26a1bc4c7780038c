"""The gate for shortcuts: event recall of gated runs against ungated, on the bundled clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lepton_edge.analysis.gate import event_recall, gate, main
from lepton_edge.analysis.replay import ClipDetections
from lepton_edge.analysis.security import SecurityConfig
from tests.analysis.test_security import VTEST_ANALYSIS
from tests.conftest import BIKES, ENGINE, VTEST

pytest.importorskip("trackers", reason="tracking needs the analysis extra (trackers)")


def ev(event_id: str, label: str, start: float, end: float) -> list[dict[str, Any]]:
    return [{"event_id": event_id, "label": label, "type": "start", "ts": start,
             "ts_start": start, "ts_end": None},
            {"event_id": event_id, "label": label, "type": "end", "ts": end, "ts_start": start,
             "ts_end": end}]


@pytest.mark.parametrize(("reference", "gated", "recall"), [
    (ev("a", "person", 0, 10), ev("x", "person", 2, 12), 1.0),
    (ev("a", "person", 0, 10), ev("x", "car", 2, 12), 0.0),  # the label must agree
    (ev("a", "person", 0, 10), ev("x", "person", 11, 12), 0.0),  # no overlap in time
    (ev("a", "person", 0, 10) + ev("b", "person", 5, 15), ev("x", "person", 0, 15), 0.5),
    (ev("a", "person", 0, 10), ev("x", "person", 1, 3) + ev("y", "person", 4, 9), 1.0),
    ([], ev("x", "person", 1, 3), 1.0),
    (ev("a", "person", 0, 10), [], 0.0),
])
def test_event_recall_rule(reference: list[dict[str, Any]], gated: list[dict[str, Any]],
                           recall: float) -> None:
    assert event_recall(reference, gated) == recall


def test_an_event_never_ended_runs_to_its_last_message() -> None:
    update = {"event_id": "a", "label": "person", "type": "update", "ts": 9.0, "ts_start": 0,
              "ts_end": None}
    ref = [*ev("a", "person", 0, 10)[:1], update]
    assert event_recall(ref, ev("x", "person", 8, 12)) == 1.0


@pytest.mark.parametrize(("clip", "fixture", "analysis"), [
    (VTEST, "vtest_dets", {**VTEST_ANALYSIS, "motion": {}}),
    (BIKES, "bikes_dets", {"motion": {}, "events": {}}),
], ids=["vtest", "bikes"])
def test_motion_gating_keeps_every_event(clip: Path, fixture: str, analysis: dict[str, Any],
                                         request: pytest.FixtureRequest) -> None:
    dets: ClipDetections = request.getfixturevalue(fixture)
    r = gate(clip, SecurityConfig.model_validate(analysis), dets)
    print(f"motion gate on {clip.name}: {r}")
    assert r["events_reference"] >= 5
    assert r["recall"] >= 0.98


def test_gate_shows_a_lossy_shortcut(bikes_dets: ClipDetections) -> None:
    """detect.fps 5 on bikes.mp4 (25 fps of fast traffic) loses events: the gate says so."""
    cfg = SecurityConfig.model_validate({"detect": {"fps": 5}, "motion": {}, "events": {}})
    r = gate(BIKES, cfg, bikes_dets)
    print(f"detect.fps 5 + motion on bikes.mp4: {r}")
    assert r["recall"] < 0.98 and r["fraction_inferred"] <= 0.2


def test_cli_prints_recall_and_fraction(tmp_path: Path, vtest_dets: ClipDetections,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = tmp_path / "analysis.yaml"
    cfg.write_text(yaml.safe_dump({**VTEST_ANALYSIS, "motion": {}, "detect": {"fps": 5}}))
    code = main(["--clip", str(VTEST), "--config", str(cfg), "--model", str(ENGINE)])
    out = capsys.readouterr().out
    print(out)
    assert "event recall" in out and "inferred 398/795 frames (50.1%)" in out
    assert code == (0 if "PASS" in out else 1)


def test_cli_bad_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "analysis.yaml"
    cfg.write_text("motion: {threshold: 0}\n")
    assert main(["--clip", str(VTEST), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "motion.threshold" in err


def test_analysis_keys_from_a_daemon_config_camera(tmp_path: Path) -> None:
    import yaml

    from lepton_edge.analysis.gate import load_analysis_config
    from lepton_edge.errors import ConfigError

    cfg = tmp_path / "daemon.yaml"
    cfg.write_text(yaml.safe_dump({"model": "engines/yolov8n", "cameras": [
        {"id": "a", "url": "x.mp4"},
        {"id": "b", "url": "y.mp4", "motion": {"threshold": 40}, "detect": {"fps": 5}}]}))
    got = load_analysis_config(cfg, "b")
    assert got.motion is not None and got.motion.threshold == 40 and got.detect.fps == 5
    assert load_analysis_config(cfg).motion is None
    with pytest.raises(ConfigError, match="no camera 'c'"):
        load_analysis_config(cfg, "c")
