"""`--record FILE.jsonl`: every published `det.` and `health` payload, one per line, exactly the
bytes sent (gzip-compressed for `.jsonl.gz`); `recording.read_recording` reads it back. Runs
inline in the emitting thread: a bench run records every frame."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

from lepton_edge.messages import HealthMessage, health_payload
from lepton_edge.results import FrameResult, Outcome


class RecorderSink:
    name = "recorder"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".gz":
            self._file = gzip.open(self.path, "wb")  # noqa: SIM115 (closed in close())
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115 (closed in close())

    def frame(self, result: FrameResult, payload: bytes) -> None:
        if self._file is not None:
            self._file.write(payload + b"\n")

    def outcome(self, outcome: Outcome) -> None:
        pass  # a recording holds frames and health; events and verdicts have their own logs

    def health(self, health: HealthMessage) -> None:
        if self._file is not None:
            self._file.write(health_payload(health) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
