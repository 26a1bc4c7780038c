"""The snapshot store: atomic JPEGs, retention by count and by bytes, lookup by name only."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.analysis.snapshots import SnapshotConfig, SnapshotStore, render
from lepton_edge.errors import ConfigError
from tests.conftest import VTEST


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    cap = cv2.VideoCapture(str(VTEST))
    ok, img = cap.read()
    cap.release()
    assert ok
    return img


def _save(store: SnapshotStore, name: str, img: np.ndarray, t: int) -> None:
    p = store.save(name, img)
    os.utime(p, ns=(t, t))  # distinct mtimes: this file system may share them within a tick


def test_save_and_fetch_a_real_jpeg(tmp_path: Path, frame: np.ndarray) -> None:
    store = SnapshotStore(tmp_path)
    img = render(frame, np.array([100, 100, 200, 300]), SnapshotConfig(crop=True), "person 0.9")
    store.save("cam-1.jpg", img)
    p = store.path("cam-1.jpg")
    assert p is not None
    back = cv2.imread(str(p))
    assert back is not None and back.shape[0] < frame.shape[0]  # cropped
    assert store.names() == ["cam-1.jpg"]


def test_retention_by_count_drops_the_oldest(tmp_path: Path, frame: np.ndarray) -> None:
    store = SnapshotStore(tmp_path, max_count=3)
    for i in range(5):
        _save(store, f"e{i}.jpg", frame, 10**9 * (i + 1))
    assert store.names() == ["e4.jpg", "e3.jpg", "e2.jpg"]


def test_retention_by_bytes(tmp_path: Path, frame: np.ndarray) -> None:
    one = len(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1])
    store = SnapshotStore(tmp_path, max_bytes=int(2.5 * one))
    for i in range(4):
        _save(store, f"e{i}.jpg", frame, 10**9 * (i + 1))
    assert store.names() == ["e3.jpg", "e2.jpg"] and store.total_bytes() <= 2.5 * one


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.jpg", "x.png", "", ".hidden"])
def test_path_refuses_what_is_not_a_snapshot_name(tmp_path: Path, name: str) -> None:
    assert SnapshotStore(tmp_path).path(name) is None


def test_bad_limits_are_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_count"):
        SnapshotStore(tmp_path, max_count=0)


def test_store_in_state_dir_with_retention(tmp_path: Path, frame: np.ndarray) -> None:
    from lepton_edge.analysis.snapshots import SnapshotRetention

    store = SnapshotStore.in_state_dir(tmp_path, SnapshotRetention(max_count=1))
    _save(store, "a.jpg", frame, 10**9)
    _save(store, "b.jpg", frame, 2 * 10**9)
    assert store.directory == tmp_path / "snapshots" and store.names() == ["b.jpg"]
