"""The gate for every shortcut (motion gate, detect rate): the events of a gated run against
those of an ungated run of the same clip, as event recall.

Matching rule (`event_recall`): the payloads are grouped by `event_id` into events, each with
its label and its interval [ts_start, ts_end] (an event never ended runs to its last message).
A reference event is recalled by a gated event of the same label whose interval overlaps its
own by at least `min_overlap` seconds; each gated event recalls at most one reference event,
assigned greedily by the longest overlap first (so one long gated event cannot stand in for two
objects). Track ids are not compared: the two runs see different frames, so their trackers
number tracks differently. Recall of no reference events is 1.0.

`python -m lepton_edge.analysis.gate --clip samples/vtest.avi --config analysis.yaml` prints
the recall, the events of each run and the fraction of frames the gated run inferred, and exits
1 below `--min-recall` (0.98). The config holds one camera's analysis keys (detect, motion,
track, zones, lines, events), or is a daemon config (`--camera ID`, default the first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from lepton_edge.analysis.replay import ClipDetections, ReplayResult, detect_clip, replay
from lepton_edge.analysis.security import SecurityConfig, build_security_analyser
from lepton_edge.errors import ConfigError, LeptonError


@dataclass(frozen=True)
class Span:
    event_id: str
    label: str
    start: float
    end: float


def spans(payloads: Sequence[Mapping[str, Any]]) -> list[Span]:
    """One Span per event_id, from its start/update/end payloads (in any order)."""
    by_id: dict[str, dict[str, Any]] = {}
    for p in payloads:
        e = by_id.setdefault(p["event_id"], {"label": p["label"], "start": p["ts_start"],
                                              "end": p["ts"]})
        e["end"] = max(e["end"], p.get("ts_end") or p["ts"])
        e["label"] = p["label"]
    return [Span(k, v["label"], v["start"], v["end"]) for k, v in by_id.items()]


def event_recall(reference: Sequence[Mapping[str, Any]], gated: Sequence[Mapping[str, Any]],
                 min_overlap: float = 0.0) -> float:
    """The fraction of reference events the gated run also has (rule in the module doc)."""
    ref, got = spans(reference), spans(gated)
    if not ref:
        return 1.0
    pairs = []
    for i, r in enumerate(ref):
        for j, g in enumerate(got):
            overlap = min(r.end, g.end) - max(r.start, g.start)
            if r.label == g.label and overlap >= min_overlap:
                pairs.append((overlap, i, j))
    used_r: set[int] = set()
    used_g: set[int] = set()
    for _, i, j in sorted(pairs, reverse=True):
        if i not in used_r and j not in used_g:
            used_r.add(i)
            used_g.add(j)
    return len(used_r) / len(ref)


def ungated(cfg: SecurityConfig) -> SecurityConfig:
    """The same analysis on every frame: no motion gate, no detect rate."""
    return cfg.model_copy(update={"motion": None, "detect": cfg.detect.model_copy(
        update={"fps": None})})


def run(clip: Path, cfg: SecurityConfig, dets: ClipDetections) -> ReplayResult:
    return replay(clip, dets, lambda emit: build_security_analyser("gate", cfg, emit, None,
                                                                  dets.labels))


def gate(clip: Path, cfg: SecurityConfig, dets: ClipDetections) -> dict[str, Any]:
    """Recall and fraction inferred of the gated config against its ungated twin."""
    ref, got = run(clip, ungated(cfg), dets), run(clip, cfg, dets)
    return {"clip": str(clip), "frames": got.frames, "inferred": got.inferred,
            "fraction_inferred": round(got.fraction_inferred, 4),
            "events_reference": len(spans(ref.payloads())),
            "events_gated": len(spans(got.payloads())),
            "recall": round(event_recall(ref.payloads(), got.payloads()), 4)}


def load_analysis_config(path: Path, camera: str | None = None) -> SecurityConfig:
    """The analysis keys of a YAML file: a mapping of them, or a daemon config whose camera
    `camera` (default: the first) holds them."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if isinstance(data, dict) and "cameras" in data:
            data = _camera(path, data["cameras"], camera)
        return SecurityConfig.model_validate(data)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {key or '(top level)'}: {first['msg']}") from err


def _camera(path: Path, cameras: Any, camera: str | None) -> dict[str, Any]:
    if not isinstance(cameras, list) or not cameras:
        raise ConfigError(f"{path}: cameras: expected a list of cameras")
    picked = cameras[0] if camera is None else next(
        (c for c in cameras if isinstance(c, dict) and c.get("id") == camera), None)
    if not isinstance(picked, dict):
        ids = [c.get("id") for c in cameras if isinstance(c, dict)]
        raise ConfigError(f"{path}: no camera {camera!r} (cameras: {ids}); pass --camera ID")
    return {k: v for k, v in picked.items() if k in SecurityConfig.model_fields}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--clip", required=True, type=Path)
    ap.add_argument("--config", required=True, type=Path,
                    help="YAML with one camera's analysis keys (detect, motion, events, ...)")
    ap.add_argument("--camera", help="with a daemon config: the camera whose keys to use")
    ap.add_argument("--model", default=Path("engines/yolov8n"), type=Path)
    ap.add_argument("--min-recall", type=float, default=0.98)
    ap.add_argument("--json", action="store_true")


def run_gate(args: argparse.Namespace) -> int:
    """Raises LeptonError (the CLI prints it on one line)."""
    cfg = load_analysis_config(args.config, args.camera)
    result = gate(args.clip, cfg, detect_clip(args.clip, args.model))
    ok = result["recall"] >= args.min_recall
    print(json.dumps(result) if args.json else
          f"{args.clip}: event recall {result['recall']:.3f} ({result['events_gated']} gated "
          f"events, {result['events_reference']} ungated); inferred "
          f"{result['inferred']}/{result['frames']} frames "
          f"({100 * result['fraction_inferred']:.1f}%); {'PASS' if ok else 'FAIL'} "
          f"(floor {args.min_recall})")
    return 0 if ok else 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    """`lepton-edge gate`: the same as `python -m lepton_edge.analysis.gate`."""
    p = sub.add_parser("gate", help="event recall of a camera's detect rate and motion gate "
                                    "against every frame inferred")
    add_arguments(p)
    p.set_defaults(func=run_gate)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lepton_edge.analysis.gate",
                                 description="event recall of a gated run against ungated")
    add_arguments(ap)
    args = ap.parse_args(argv)
    try:
        return run_gate(args)
    except LeptonError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
