"""The best frame of each event as a JPEG in the state directory, with retention by count and
bytes (a camera box's disk is small). The HTTP API serves them by name via `path(name)`."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lepton_edge.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9_.:-]+\.jpg$")


class SnapshotConfig(BaseModel):
    """`snapshots:` of a camera. crop: the box with a margin instead of the full frame."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    crop: bool = False
    draw_box: bool = True
    quality: Annotated[int, Field(ge=10, le=100)] = 80
    # A better snapshot replaces the event's only when its score beats the kept one by this.
    min_gain: Annotated[float, Field(ge=0, le=1)] = 0.05


class SnapshotRetention(BaseModel):
    """`snapshots:` of the daemon (one store for every camera, <state_dir>/snapshots)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_count: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    max_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024


class SnapshotStore:
    """JPEG files in one directory, oldest removed first past `max_count` files or `max_bytes`.
    Thread-safe: the analyser writes, the HTTP API reads."""

    def __init__(self, directory: str | Path, *, max_count: int = 1000,
                 max_bytes: int = 200 * 1024 * 1024) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ConfigError(f"snapshots: max_count ({max_count}) and max_bytes ({max_bytes}) "
                              "must be >= 1")
        self.directory = Path(directory)
        self.max_count, self.max_bytes = max_count, max_bytes
        self._lock = threading.Lock()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path,
                     retention: SnapshotRetention | None = None) -> SnapshotStore:
        r = retention or SnapshotRetention()
        return cls(Path(state_dir) / "snapshots", max_count=r.max_count, max_bytes=r.max_bytes)

    def save(self, name: str, image: np.ndarray, quality: int = 80) -> Path:
        """Write (or replace) `name` atomically, then apply retention (never to `name`)."""
        self._check(name)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"snapshot {name}: JPEG encoding failed for an image of shape "
                             f"{image.shape}")
        with self._lock:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                tmp = self.directory / f".{name}.tmp"
                tmp.write_bytes(buf.tobytes())
                os.replace(tmp, self.directory / name)
            except OSError as err:
                raise ConfigError(f"snapshots: cannot write {self.directory / name} "
                                  f"({err.strerror}); check state_dir") from err
            self._retain(keep=name)
        return self.directory / name

    def path(self, name: str) -> Path | None:
        """The file of snapshot `name`, or None (unknown, removed, or not a snapshot name)."""
        if not NAME.match(name):
            return None
        p = self.directory / name
        return p if p.is_file() else None

    def names(self) -> list[str]:
        """Snapshot names, newest first."""
        return [p.name for p in reversed(self._files())]

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files())

    def _files(self) -> list[Path]:
        try:
            files = [p for p in self.directory.iterdir() if NAME.match(p.name)]
        except FileNotFoundError:
            return []
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _retain(self, keep: str) -> None:
        files = self._files()
        sizes = {p: p.stat().st_size for p in files}
        total = sum(sizes.values())
        for p in files:
            if len(files) <= self.max_count and total <= self.max_bytes:
                break
            if p.name == keep:
                continue
            p.unlink(missing_ok=True)
            files = [f for f in files if f != p]
            total -= sizes[p]

    @staticmethod
    def _check(name: str) -> None:
        if not NAME.match(name):
            raise ValueError(f"snapshot name {name!r}: expected letters, digits, _.:- and .jpg")


def render(image: np.ndarray, box: np.ndarray, cfg: SnapshotConfig, caption: str) -> np.ndarray:
    """The frame (a copy) with the box drawn, cropped to the box plus a margin if configured."""
    out = image.copy()
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    if cfg.draw_box:
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(out, caption, (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 255, 0), 1, cv2.LINE_AA)
    if cfg.crop:
        h, w = out.shape[:2]
        mx, my = (x2 - x1) // 2 + 8, (y2 - y1) // 2 + 8
        out = out[max(0, y1 - my):min(h, y2 + my), max(0, x1 - mx):min(w, x2 + mx)]
    return out
