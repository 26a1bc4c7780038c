"""The detect rate and the motion gate. A clip with no relevant motion (a bundled clip's static
background with a lighting ramp, a sudden light switch and sensor noise, generated here) must
give zero events with inference on under 10% of its frames, the real model on what is
inferred."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from lepton_edge.analysis.motion import DetectConfig, FrameGate, MotionConfig, MotionDetector
from lepton_edge.analysis.replay import Detector, frames_of
from lepton_edge.analysis.security import SecurityConfig, build_security_analyser
from lepton_edge.results import FrameResult
from tests.conftest import BIKES, ENGINE, VTEST

FPS = 10.0


@functools.cache
def background(clip: Path, samples: int = 25) -> np.ndarray:
    """The clip's static scene: the per-pixel median of frames spread over the clip."""
    frames = list(frames_of(clip))
    picks = np.linspace(0, len(frames) - 1, samples).astype(int)
    bg = np.median(np.stack([frames[i] for i in picks]), axis=0).astype(np.uint8)
    bg.flags.writeable = False
    return bg


def still_scene(bg: np.ndarray, n: int, seed: int = 0) -> Iterator[np.ndarray]:
    """n frames: slow dimming to 70% and back, a light switched on at n/2 (+45 levels at once),
    Gaussian sensor noise (sigma 4)."""
    rng = np.random.default_rng(seed)
    base = bg.astype(np.float32)
    for i in range(n):
        gain = 1.0 - 0.3 * np.sin(np.pi * i / n)
        lit = 45.0 if i >= n // 2 else 0.0
        noise = rng.normal(0, 4.0, bg.shape).astype(np.float32)
        yield np.clip(base * gain + lit + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("clip", [VTEST, BIKES], ids=["vtest", "bikes"])
def test_still_scene_gives_no_events_and_little_inference(clip: Path) -> None:
    pytest.importorskip("trackers", reason="tracking needs the analysis extra (trackers)")
    cfg = SecurityConfig.model_validate({"motion": {}, "events": {}})
    events: list[object] = []
    n = 300  # 30 s at 10 fps
    with Detector(ENGINE) as detect:
        a = build_security_analyser("still", cfg, events.append, None, detect.labels)
        for i, img in enumerate(still_scene(background(clip), n)):
            t = i / FPS
            if a.admit(img, i, t):
                a.analyse(FrameResult("still", i, i, 1000.0 + t, t, img, detect(img),
                                      detect.labels, {}))
        a.close("stopping")
    stats = a.gate.stats
    assert a.gate.motion is not None
    print(f"{clip.name} still scene: inferred {stats.inferred}/{stats.seen} "
          f"({100 * stats.fraction:.1f}%), recalibrations {a.gate.motion.recalibrations}, "
          f"events {len(events)}")
    assert events == []
    assert stats.fraction < 0.10
    assert a.gate.motion.recalibrations >= 1  # the light switch recalibrated, did not fire


def test_motion_detector_sees_a_person_walking_in() -> None:
    bg = background(VTEST)
    det = MotionDetector(MotionConfig())
    for img in itertools.islice(still_scene(bg, 300), 10):  # the slow ramp: no motion
        assert not det(img)
    walker = bg.copy()
    cv2.rectangle(walker, (300, 200), (330, 290), (20, 20, 20), -1)  # a dark figure, 30x90 px
    assert det(walker)


def test_detect_rate_keeps_every_fifth_frame_of_25_fps() -> None:
    gate = FrameGate(DetectConfig(fps=5), None)
    img = np.zeros((10, 10, 3), np.uint8)
    kept = [i for i in range(100) if gate.admit(img, i / 25.0, False)]
    assert kept == list(range(0, 100, 5))


def test_keepalive_infers_a_still_scene_every_interval() -> None:
    gate = FrameGate(DetectConfig(), MotionConfig(keepalive_s=2.0))
    img = np.full((100, 100, 3), 128, np.uint8)
    kept = [i for i in range(100) if gate.admit(img, i / 10.0, False)]
    assert kept == list(range(0, 100, 20))
    assert gate.admit(img, 10.05, True)  # a moving track: inferred regardless


def test_detect_rate_is_kept_on_average() -> None:
    gate = FrameGate(DetectConfig(fps=10), None)
    img = np.zeros((10, 10, 3), np.uint8)
    kept = [i for i in range(250) if gate.admit(img, i / 25.0, False)]
    assert len(kept) == 100  # 10 a second over 10 s of 25 fps, not every third frame (84)


def test_buffered_iou_option_is_validated() -> None:
    from pydantic import ValidationError

    from lepton_edge.analysis.tracking import TrackConfig

    assert TrackConfig(buffer=0.5).buffer == 0.5
    with pytest.raises(ValidationError):
        TrackConfig(buffer=-1)
