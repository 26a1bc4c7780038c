"""Zones (inertia, loitering, normalised polygons) and lines (N-frame confirmation, flicker never
double counts, per-class in/out, the segment's extent)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from lepton_edge.analysis.zones import Line, LineConfig, Zone, ZoneConfig

SQUARE = ((100, 100), (200, 100), (200, 200), (100, 200))


def feed_zone(zone: Zone, points: list[tuple[float, float]], dt: float = 0.1) -> list[bool]:
    return [zone.update(1, "person", p, i * dt) for i, p in enumerate(points)]


def test_zone_membership_agrees_with_opencv_edges_included() -> None:
    rng = np.random.default_rng(7)
    shapes = [[(10, 10), (200, 10), (200, 120), (10, 120)],  # a rectangle
              [(0, 0), (300, 0), (150, 80), (300, 200), (0, 200)],  # concave
              [(50, 5), (90, 160), (5, 60), (110, 60), (15, 160)]]  # self-intersecting star
    for poly in shapes:
        zone = Zone(ZoneConfig(id="z", polygon=poly, inertia=1), 320, 240)
        cv_poly = np.asarray(poly, np.float32).reshape(-1, 1, 2)
        points = [tuple(p) for p in rng.uniform(-10, 320, (400, 2))]
        points += [tuple(map(float, v)) for v in poly]  # the vertices
        points += [((x1 + x2) / 2, (y1 + y2) / 2) for (x1, y1), (x2, y2)
                   in zip(poly, poly[1:] + poly[:1], strict=True)]  # mid-edges
        for pt in points:
            want = cv2.pointPolygonTest(cv_poly, pt, False) >= 0
            assert zone.contains(pt) == want, (poly, pt)


def test_zone_inertia_delays_entry_and_exit() -> None:
    zone = Zone(ZoneConfig(id="z", polygon=SQUARE, inertia=3), 640, 480)
    inside, outside = (150, 150), (50, 50)
    got = feed_zone(zone, [outside, inside, inside, inside, outside, inside, outside, outside,
                           outside])
    assert got == [False, False, False, True, True, True, True, True, False]


def test_zone_loitering_needs_seconds_inside() -> None:
    zone = Zone(ZoneConfig(id="z", polygon=SQUARE, inertia=1, loitering_s=1.0), 640, 480)
    got = feed_zone(zone, [(150, 150)] * 15, dt=0.1)
    assert got.index(True) == 10  # 1.0 s after it first counted as inside


def test_zone_normalised_polygon_and_class_filter() -> None:
    cfg = ZoneConfig(id="z", polygon=((0.5, 0.5), (1, 0.5), (1, 1), (0.5, 1)), inertia=1,
                     classes=("car",))
    zone = Zone(cfg, 640, 480)
    assert zone.contains((400, 300)) and not zone.contains((100, 100))
    assert not zone.update(1, "person", (400, 300), 0.0)
    assert zone.update(2, "car", (400, 300), 0.0)


def feed_line(line: Line, xs: list[float], label: str = "person", track: int = 1) -> list[str]:
    out = []
    for i, x in enumerate(xs):
        c = line.update(track, label, (x, 150.0), i * 0.1)
        if c is not None:
            out.append(c.direction)
    return out


VERTICAL = LineConfig(id="l", points=((300, 0), (300, 400)), confirm_frames=3)


def test_line_counts_after_confirmation_with_direction() -> None:
    # a -> b points down; its right (seen in the image) is smaller x: crossing leftwards is in.
    line = Line(VERTICAL, 640, 480)
    assert feed_line(line, [350, 340, 290, 280, 270]) == ["in"]
    assert feed_line(line, [200, 320, 330, 340], track=2) == ["out"]
    assert line.counts["in"]["person"] == 1 and line.counts["out"]["person"] == 1


def test_line_flicker_never_double_counts() -> None:
    line = Line(VERTICAL, 640, 480)
    xs = [350, 290, 350, 290, 350, 290, 290, 290, 350, 290, 290, 290, 290]
    assert feed_line(line, xs) == ["in"]  # only the 3-frame stay counts, and only once


def test_line_per_class_counters_and_in_side() -> None:
    cfg = VERTICAL.model_copy(update={"in_side": "left", "confirm_frames": 1})
    line = Line(cfg, 640, 480)
    feed_line(line, [350, 250], label="car", track=1)
    feed_line(line, [350, 250], label="person", track=2)
    assert dict(line.counts["out"]) == {"car": 1, "person": 1}


def test_line_crossing_beyond_the_segment_is_not_counted() -> None:
    line = Line(LineConfig(id="l", points=((300, 0), (300, 100)), confirm_frames=1), 640, 480)
    assert feed_line(line, [350, 250]) == []  # at y=150, below the segment's end


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"id": "l", "points": ((1, 1), (1, 1))}, "must differ"),
    ({"id": "l", "points": ((-1, 1), (1, 2))}, ">= 0"),
    ({"id": "bad id", "points": ((0, 1), (1, 2))}, "pattern"),
])
def test_line_config_errors(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        LineConfig(**kwargs)  # type: ignore[arg-type]


def test_line_dead_band_keeps_the_side() -> None:
    cfg = VERTICAL.model_copy(update={"confirm_frames": 1, "margin": 0.02})  # 16 px at 640x480
    line = Line(cfg, 640, 480)
    assert feed_line(line, [350, 290, 310, 290, 310]) == []  # wobbling within 10 px of x=300
    assert feed_line(line, [350, 250], track=2) == ["in"]
