"""Recordings: what `lepton-edge run --record FILE.jsonl` wrote, read back as typed messages.

A recording holds every published payload, one JSON object per line, exactly the bytes sent
(`.jsonl`, or gzip-compressed `.jsonl.gz`). Detection payloads carry a `"camera"` key (topic
`det.<camera>`); health payloads do not (topic `health`). Lines are decoded with the client
decoder (`messages.decode`), so a recording is held to the same schema as a live subscriber, and
a malformed line is reported with its line number.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lepton_edge.detections import Detections
from lepton_edge.errors import MessageError
from lepton_edge.messages import DET_PREFIX, HEALTH_TOPIC, DetectionMessage, HealthMessage, decode


@dataclass(frozen=True)
class Recording:
    """One recording: per camera, its detection messages by source frame index (in recorded
    order), and the health messages in order."""

    path: Path
    cameras: dict[str, dict[int, DetectionMessage]]
    health: tuple[HealthMessage, ...] = ()
    lines: int = 0
    _labels: dict[int, str] = field(default_factory=dict, repr=False)

    def camera(self, camera: str | None = None) -> dict[int, DetectionMessage]:
        """The messages of `camera` (of the only camera when None), by frame index."""
        if camera is None:
            if len(self.cameras) != 1:
                raise MessageError(f"{self.path}: holds {len(self.cameras)} cameras "
                                   f"({', '.join(self.cameras) or 'none'}); name one")
            return next(iter(self.cameras.values()))
        if camera not in self.cameras:
            raise MessageError(f"{self.path}: no camera {camera!r} in this recording (it has "
                               f"{', '.join(self.cameras) or 'no detection messages'})")
        return self.cameras[camera]

    def messages(self) -> Iterator[DetectionMessage]:
        """Every detection message, camera by camera, in recorded order."""
        for frames in self.cameras.values():
            yield from frames.values()

    @property
    def labels(self) -> dict[int, str]:
        """class_id -> label, as seen in the recording."""
        return self._labels

    @property
    def frame_count(self) -> int:
        return sum(len(f) for f in self.cameras.values())


def to_detections(msg: DetectionMessage) -> Detections:
    """The detections of one message as arrays (xyxy float32, score float32, class_id int32)."""
    n = len(msg.detections)
    xyxy = np.asarray([d.box for d in msg.detections], np.float32).reshape(n, 4)
    score = np.asarray([d.score for d in msg.detections], np.float32).reshape(n)
    cls = np.asarray([d.class_id for d in msg.detections], np.int32).reshape(n)
    return Detections(xyxy, score, cls)


def open_lines(path: Path) -> Iterator[bytes]:
    """The raw lines of a `.jsonl` or `.jsonl.gz` file (gzip recognised by its magic bytes)."""
    try:
        with open(path, "rb") as probe:
            magic = probe.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            yield from f
    except OSError as err:
        raise MessageError(f"{path}: cannot read recording ({err.strerror or err}); record one "
                           f"with `lepton-edge run --config CFG --record FILE.jsonl`") from err
    except EOFError as err:
        raise MessageError(f"{path}: the gzip stream is truncated ({err}); compress the "
                           f"recording again with `gzip -k FILE.jsonl`") from err


def read_recording(path: str | Path) -> Recording:
    """Read a recording. Raises MessageError naming the file and line of a malformed line, or a
    frame of a camera recorded twice (frame-by-frame matching would be ambiguous)."""
    path = Path(path)
    cameras: dict[str, dict[int, DetectionMessage]] = {}
    first_line: dict[tuple[str, int], int] = {}
    health: list[HealthMessage] = []
    labels: dict[int, str] = {}
    n = 0
    for n, raw in enumerate(open_lines(path), start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            topic = _topic(line)
            msg = decode(topic, line)
        except MessageError as err:
            raise MessageError(f"{path}:{n}: {err}") from None
        if isinstance(msg, HealthMessage):
            health.append(msg)
            continue
        assert isinstance(msg, DetectionMessage)
        key = (msg.camera, msg.frame)
        if key in first_line:
            raise MessageError(f"{path}:{n}: camera {msg.camera!r} frame {msg.frame} was already "
                               f"recorded on line {first_line[key]}; a recording must hold each "
                               f"frame once (record a bench-mode run)")
        first_line[key] = n
        cameras.setdefault(msg.camera, {})[msg.frame] = msg
        for d in msg.detections:
            labels.setdefault(d.class_id, d.label)
    return Recording(path, cameras, tuple(health), n, labels)


def _topic(line: bytes) -> str:
    """The topic a recorded payload was sent on: `det.<camera>` when it names a camera."""
    try:
        body = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return HEALTH_TOPIC  # let decode() say what is wrong with it
    camera = body.get("camera") if isinstance(body, dict) else None
    if isinstance(camera, str) and camera:
        return DET_PREFIX + camera
    if isinstance(body, dict) and "camera" in body:
        raise MessageError(f"camera: expected a non-empty string, got {camera!r:.40}")
    return HEALTH_TOPIC
