"""The diff: table-driven on small hand-written recordings, then on the real golden recording,
and the `lepton-edge diff` command with its exit code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lepton_edge.cli import main
from lepton_edge.compiler.accuracy import agreement
from lepton_edge.detections import Detections
from lepton_edge.devtools.compare import FrameSelection, compare, match, parse_selection
from lepton_edge.devtools.recording import read_recording, to_detections
from lepton_edge.errors import ConfigError, MessageError
from tests.devtools.test_recording import GOLDEN, det_line, write

PERSON = (100, 100, 200, 300, 0.9, 0)
CAR = (400, 200, 600, 300, 0.8, 2)
SMALL = (10, 10, 40, 60, 0.4, 0)
REFERENCE = {0: [PERSON, CAR], 1: [PERSON, SMALL], 2: [CAR]}

# name: candidate frames, expected (map50, person P, person R, car P, car R, worst frame ids)
CASES = {
    "identical": (REFERENCE, (1.0, 1.0, 1.0, 1.0, 1.0, [])),
    "misses the small person": (
        {0: [PERSON, CAR], 1: [PERSON], 2: [CAR]}, (None, 1.0, 2 / 3, 1.0, 1.0, [1])),
    "car shifted off (IoU < 0.5)": (
        {0: [PERSON, (520, 200, 720, 300, 0.8, 2)], 1: [PERSON, SMALL], 2: [CAR]},
        (None, 1.0, 1.0, 0.5, 0.5, [0])),
    "car called a truck": (
        {0: [PERSON, (*CAR[:5], 7)], 1: [PERSON, SMALL], 2: [CAR]},
        (None, 1.0, 1.0, 1.0, 0.5, [0])),
    "an extra person": (
        {0: [PERSON, CAR, (300, 50, 350, 150, 0.6, 0)], 1: [PERSON, SMALL], 2: [CAR]},
        (None, 3 / 4, 1.0, 1.0, 1.0, [0])),
    "frame 2 missing": ({0: [PERSON, CAR], 1: [PERSON, SMALL]}, (None, 1.0, 1.0, 1.0, 0.5, [2])),
    "nothing found": ({0: [], 1: [], 2: []}, (0.0, 1.0, 0.0, 1.0, 0.0, [0, 1, 2])),
}


def recording(path: Path, frames: dict[int, list]) -> Path:
    return write(path, [det_line("plaza", i, boxes) for i, boxes in frames.items()])


@pytest.mark.parametrize("name", list(CASES))
def test_diff_of_hand_written_recordings(tmp_path: Path, name: str) -> None:
    frames, (map50, pp, pr, cp, cr, worst) = CASES[name]
    a = read_recording(recording(tmp_path / "a.jsonl", REFERENCE))
    b = read_recording(recording(tmp_path / "b.jsonl", frames))
    result = compare(a, b)
    by_label = {c.label: c for c in result.classes}
    assert (by_label["person"].precision, by_label["person"].recall) == pytest.approx((pp, pr))
    assert (by_label["car"].precision, by_label["car"].recall) == pytest.approx((cp, cr))
    assert sorted(f.frame for f in result.worst) == worst
    assert result.frames == 3
    assert result.missing == (name == "frame 2 missing")
    if map50 is not None:
        assert result.map50 == pytest.approx(map50)
    else:
        assert 0.0 < result.map50 < 1.0
    text = result.format()
    assert "agreement mAP50" in text and "person" in text


def test_the_mAP_is_the_compile_gate_s_agreement(tmp_path: Path) -> None:
    a = read_recording(recording(tmp_path / "a.jsonl", REFERENCE))
    b = read_recording(recording(tmp_path / "b.jsonl", CASES["misses the small person"][0]))
    got = compare(a, b, ref_score=0.25)
    ref = [to_detections(a.camera()[i]) for i in range(3)]
    cand = [to_detections(b.camera()[i]) for i in range(3)]
    want = agreement(ref, cand, min_score=0.25)
    assert (got.map50, got.map50_95) == (want.map50, want.map50_95)


def test_ref_score_drops_weak_reference_boxes(tmp_path: Path) -> None:
    a = read_recording(recording(tmp_path / "a.jsonl", REFERENCE))
    b = read_recording(recording(tmp_path / "b.jsonl", CASES["misses the small person"][0]))
    assert compare(a, b).map50 < 1.0
    result = compare(a, b, ref_score=0.5)  # SMALL (0.4) is no longer expected
    assert result.map50 == pytest.approx(1.0)
    assert not result.worst


def test_frame_selection_restricts_what_is_compared(tmp_path: Path) -> None:
    a = read_recording(recording(tmp_path / "a.jsonl", REFERENCE))
    b = read_recording(recording(tmp_path / "b.jsonl", CASES["misses the small person"][0]))
    result = compare(a, b, frames=[parse_selection("0:2:2")])
    assert result.frames == 2 and result.map50 == pytest.approx(1.0)
    with pytest.raises(MessageError, match="no frames to compare"):
        compare(a, b, frames=[parse_selection("other=0:2")])


@pytest.mark.parametrize(("text", "expected"), [
    ("0:199", FrameSelection(0, 199, 1, None)),
    ("plaza=400:794:2", FrameSelection(400, 794, 2, "plaza")),
    (" bikes=125:249 ", FrameSelection(125, 249, 1, "bikes")),
    ("5:1", "START <= STOP"),
    ("0:10:0", "STRIDE >= 1"),
    ("10", "expected [CAMERA=]START:STOP"),
    ("a b=1:2", "expected [CAMERA=]START:STOP"),
])
def test_parse_selection(text: str, expected: FrameSelection | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
            parse_selection(text)
    else:
        assert parse_selection(text) == expected


def test_selection_membership() -> None:
    sel = FrameSelection(400, 794, 2, "plaza")
    assert ("plaza", 400) in sel and ("plaza", 794) in sel
    assert ("plaza", 401) not in sel and ("plaza", 796) not in sel and ("bikes", 400) not in sel


def test_match_is_greedy_by_score_and_class_aware() -> None:
    ref = Detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32),
                     np.array([0.9, 0.8], np.float32), np.array([0, 1], np.int32))
    cand = Detections(np.array([[1, 0, 11, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32),
                      np.array([0.5, 0.95, 0.7], np.float32), np.array([0, 0, 1], np.int32))
    hit_ref, hit_cand = match(ref, cand, 0.5)
    assert hit_ref.tolist() == [True, True]
    assert hit_cand.tolist() == [False, True, True]  # the best-scored class-0 box took it


def test_golden_against_itself_agrees_fully() -> None:
    golden = read_recording(GOLDEN)
    result = compare(golden, golden)
    assert result.map50 == pytest.approx(1.0) and result.frames == 200
    assert all(c.precision == 1.0 and c.recall == 1.0 for c in result.classes)
    assert not result.worst


def test_golden_against_a_weakened_copy_finds_the_difference(tmp_path: Path) -> None:
    """A real recording with every detection under 0.5 removed, as a stricter threshold would."""
    golden = read_recording(GOLDEN)
    weak = tmp_path / "weak.jsonl"
    kept = []
    for i, msg in golden.camera("plaza").items():
        d = to_detections(msg)
        keep = d.score >= 0.5
        rows = [(*b, s, c) for b, s, c in zip(d.xyxy[keep].tolist(), d.score[keep].tolist(),
                                               d.class_id[keep].tolist(), strict=True)]
        kept.append(det_line("plaza", i, rows))
    write(weak, kept)
    result = compare(golden, read_recording(weak))
    person = next(c for c in result.classes if c.label == "person")
    assert person.precision == 1.0 and person.recall < 1.0
    assert result.map50 < 1.0 and result.worst
    assert all(s < 0.5 for f in result.worst for _, s in f.only_a)


def test_diff_command_exit_code_follows_min_map(tmp_path: Path, capsys) -> None:
    a = recording(tmp_path / "a.jsonl", REFERENCE)
    b = recording(tmp_path / "b.jsonl", CASES["nothing found"][0])
    assert main(["diff", str(a), str(a), "--min-map", "0.99"]) == 0
    assert "agreement mAP50 1.0000" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--min-map", "0.5"]) == 1
    assert "below --min-map 0.5" in capsys.readouterr().out
    assert main(["diff", str(a), str(b), "--json"]) == 0
    assert '"map50": 0.0' in capsys.readouterr().out


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--min-map", "2"], 2, "--min-map must be between 0 and 1"),
    (["--frames", "x"], 2, "expected [CAMERA=]START:STOP"),
    (["--camera", "gate-9"], 7, "no camera 'gate-9'"),
])
def test_diff_command_errors_are_one_line(tmp_path: Path, capsys, args: list[str], code: int,
                                          message: str) -> None:
    a = recording(tmp_path / "a.jsonl", REFERENCE)
    assert main(["diff", str(a), str(a), *args]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
