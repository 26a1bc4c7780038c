"""Reading recordings: the daemon's own payload bytes, plain and gzipped, and malformed lines
reported with their line number."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from lepton_edge.detections import Detections
from lepton_edge.devtools.recording import read_recording, to_detections
from lepton_edge.errors import MessageError
from lepton_edge.messages import CameraHealth, HealthMessage, detections_payload, health_payload

GOLDEN = Path(__file__).parent.parent / "golden" / "plaza-fp32.jsonl"
LABELS = ["person", "bicycle", "car"]


def det_line(camera: str, frame: int, boxes: list[tuple[float, float, float, float, float, int]],
             seq: int | None = None) -> bytes:
    """One detection payload exactly as the daemon sends it (boxes: x1 y1 x2 y2 score class)."""
    arr = np.asarray(boxes, np.float32).reshape(-1, 6)
    dets = Detections(arr[:, :4].copy(), arr[:, 4].copy(), arr[:, 5].astype(np.int32))
    return detections_payload(camera=camera, seq=frame if seq is None else seq, frame=frame,
                              ts=1700000000.0 + frame / 10, width=768, height=576,
                              model="yolov8n", precision="fp32",
                              latency_ms={"infer": 20.0 + frame, "capture_to_publish": 30.0},
                              detections=dets, labels=LABELS)


def health_line(state: str = "running") -> bytes:
    cam = CameraHealth("plaza", "connected", 10.0, 3, 0, 0, 3)
    return health_payload(HealthMessage(1700000000.0, state, 1.0, 10.0, 0, (cam,)))


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_reads_detections_by_camera_and_frame_and_health(tmp_path: Path) -> None:
    path = write(tmp_path / "run.jsonl", [
        health_line("starting"),
        det_line("plaza", 0, [(10, 20, 110, 220, 0.9, 0), (300, 40, 400, 90, 0.5, 2)]),
        det_line("street", 0, []),
        health_line(),
        det_line("plaza", 1, [(12, 20, 112, 220, 0.8, 0)]),
    ])
    rec = read_recording(path)
    assert list(rec.cameras) == ["plaza", "street"]
    assert list(rec.camera("plaza")) == [0, 1]
    assert rec.frame_count == 3 and len(rec.health) == 2 and rec.lines == 5
    assert rec.health[0].state == "starting"
    assert rec.labels == {0: "person", 2: "car"}
    d = to_detections(rec.camera("plaza")[0])
    assert d.xyxy.dtype == np.float32 and d.xyxy.shape == (2, 4)
    np.testing.assert_allclose(d.xyxy[1], [300, 40, 400, 90])
    assert d.class_id.tolist() == [0, 2]
    assert len(to_detections(rec.camera("street")[0])) == 0


def test_gzipped_recording_reads_the_same(tmp_path: Path) -> None:
    lines = [det_line("plaza", i, [(i, 0, i + 50, 80, 0.7, 0)]) for i in range(5)]
    plain = read_recording(write(tmp_path / "a.jsonl", lines))
    gz = tmp_path / "a.jsonl.gz"
    gz.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    packed = read_recording(gz)
    assert packed.cameras == plain.cameras


def test_the_golden_recording_reads() -> None:
    rec = read_recording(GOLDEN)
    frames = rec.camera("plaza")
    assert list(frames) == list(range(200))
    assert [m.seq for m in frames.values()] == list(range(200))
    assert rec.health and rec.health[-1].state == "stopping"
    assert "person" in rec.labels.values()


@pytest.mark.parametrize(("line", "expected"), [
    (b"{not json", "payload is not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"v": 1, "camera": "plaza"}', "missing"),
    (b'{"v": 2, "camera": "plaza"}', "schema version 2"),
    (b'{"v": 1, "camera": 5}', "camera: expected a non-empty string"),
    (det_line("plaza", 1, [(0, 0, 10, 10, 0.5, 0)]).replace(b'"score":0.5', b'"score":1.5'),
     "detections[0].score: must be in 0..1"),
    (det_line("plaza", 1, []).replace(b'"seq":1', b'"seq":"1"'), "seq: expected integer"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_malformed_line_is_reported_with_its_line_number(tmp_path: Path, line: bytes,
                                                         expected: str) -> None:
    path = write(tmp_path / "bad.jsonl", [det_line("plaza", 0, []), health_line(), line])
    with pytest.raises(MessageError) as err:
        read_recording(path)
    assert "bad.jsonl:3: " in str(err.value)
    assert expected in str(err.value)


def test_a_frame_recorded_twice_is_refused_naming_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "twice.jsonl", [det_line("plaza", 0, []), det_line("plaza", 1, []),
                                            det_line("plaza", 0, [], seq=2)])
    with pytest.raises(MessageError, match=r"twice.jsonl:3: camera 'plaza' frame 0 was already "
                                           r"recorded on line 1"):
        read_recording(path)


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress(det_line("plaza", 0, []) * 50)[:-20])
    with pytest.raises(MessageError, match="truncated"):
        read_recording(gz)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_bytes(det_line("plaza", 0, []) + b"\n\n" + det_line("plaza", 1, []) + b"\n")
    assert list(read_recording(path).camera()) == [0, 1]


def test_missing_file_says_how_to_record_one(tmp_path: Path) -> None:
    with pytest.raises(MessageError, match=r"cannot read recording.*--record"):
        read_recording(tmp_path / "nope.jsonl")


def test_camera_lookup_errors_name_the_cameras(tmp_path: Path) -> None:
    rec = read_recording(write(tmp_path / "two.jsonl", [det_line("a", 0, []),
                                                        det_line("b", 0, [])]))
    with pytest.raises(MessageError, match="holds 2 cameras"):
        rec.camera()
    with pytest.raises(MessageError, match=r"no camera 'c'.*a, b"):
        rec.camera("c")
