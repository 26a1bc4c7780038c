"""Failure evidence: a JPEG with ROIs and boxes and its JSON per verdict, retention by count
and bytes."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np

from lepton_edge.analysis.inspection.rules import Roi
from lepton_edge.analysis.inspection.verdict import Reason, Verdict
from lepton_edge.detections import Detections
from lepton_edge.sinks.evidence import EvidenceConfig, EvidenceWriter, evidence_name

ROI = Roi(id="tray", rect=(10, 10, 300, 200), count=({"label": "dog", "exact": 1},))
IMAGES = Path(__file__).resolve().parents[2] / "samples" / "images"


def _verdict(tid: int, image: np.ndarray | None) -> Verdict:
    dets = Detections(np.array([[20, 20, 120, 150]], np.float32), np.array([0.9], np.float32),
                      np.array([16], np.int32))
    return Verdict("line-1", tid, "fail", (Reason("count", "tray", "count dog", "== 1", 0),),
                   {"tray": []}, 30.0, tid, time.time(), time.time(), frame=3,
                   evidence=evidence_name("line-1", tid, "fail"), image=image,
                   detections=dets, labels=tuple(f"c{i}" for i in range(80)))


def _write(w: EvidenceWriter, verdicts: list[Verdict]) -> None:
    w.open()
    for v in verdicts:
        w.outcome(v)
    w.close()


def test_jpeg_with_drawing_and_json(tmp_path: Path) -> None:
    image = cv2.imread(str(IMAGES / "dog.jpg"))
    w = EvidenceWriter(tmp_path, EvidenceConfig(), [ROI])
    _write(w, [_verdict(7, image), _verdict(8, None)])
    jpg = cv2.imread(str(tmp_path / "line-1-00000007-fail.jpg"))
    assert jpg.shape == image.shape
    assert np.abs(jpg.astype(int) - image.astype(int)).mean() > 1  # drawn on, not a copy
    body = json.loads((tmp_path / "line-1-00000007-fail.json").read_text())
    assert body["trigger_id"] == 7 and body["evidence"] == "line-1-00000007-fail.jpg"
    assert (tmp_path / "line-1-00000008-fail.json").is_file()  # no frame: JSON only
    assert not (tmp_path / "line-1-00000008-fail.jpg").exists()


def test_retention_by_count_and_bytes(tmp_path: Path) -> None:
    image = cv2.imread(str(IMAGES / "dog.jpg"))
    w = EvidenceWriter(tmp_path / "a", EvidenceConfig(max_files=3), [ROI])
    _write(w, [_verdict(i, image) for i in range(1, 7)])
    assert sorted(p.name for p in (tmp_path / "a").glob("*.jpg")) == [
        f"line-1-0000000{i}-fail.jpg" for i in (4, 5, 6)]
    w2 = EvidenceWriter(tmp_path / "a", EvidenceConfig(max_files=2), [ROI])  # reopened
    _write(w2, [])
    assert len(list((tmp_path / "a").glob("*.jpg"))) == 2
    w3 = EvidenceWriter(tmp_path / "b", EvidenceConfig(max_bytes=1 << 20), [ROI])
    big = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8)  # ~1 MB JPEG
    _write(w3, [_verdict(i, big) for i in range(1, 5)])
    total = sum(p.stat().st_size for p in (tmp_path / "b").iterdir())
    assert total <= 1 << 20 and w3.removed >= 2
