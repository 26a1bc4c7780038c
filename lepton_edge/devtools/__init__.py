"""The bench subcommands `diff` and `report` (wired into `lepton-edge` by lepton_edge.cli).

    lepton-edge diff A.jsonl B.jsonl [--min-map 0.99] [--ref-score 0.25] [--frames plaza=0:199]
    lepton-edge report RUN.jsonl --out DIR

`diff` exits 1 when the agreement mAP50 of B against A is below `--min-map`, so a CI job can
hold a change (or an INT8 model) against a recorded golden run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lepton_edge.errors import ConfigError


def add_diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", type=Path, metavar="A.jsonl", help="the reference recording")
    parser.add_argument("b", type=Path, metavar="B.jsonl", help="the candidate recording")
    parser.add_argument("--min-map", type=float, default=None, metavar="MAP50",
                        help="exit 1 when agreement mAP50 of B against A is below this")
    parser.add_argument("--iou", type=float, default=0.5,
                        help="IoU for a match in precision/recall (default 0.5)")
    parser.add_argument("--ref-score", type=float, default=0.0,
                        help="drop A's boxes below this score (the compile gate uses 0.25)")
    parser.add_argument("--score", type=float, default=None,
                        help="B's boxes below this are left out of precision/recall "
                             "(default: --ref-score); the mAP ranks all of them")
    parser.add_argument("--frames", action="append", default=[],
                        metavar="[CAMERA=]START:STOP[:STRIDE]",
                        help="compare only these frames (inclusive stop; repeatable)")
    parser.add_argument("--camera", action="append", default=[],
                        help="compare only this camera (repeatable)")
    parser.add_argument("--worst", type=int, default=10,
                        help="how many of the most different frames to list (default 10)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_diff(args: argparse.Namespace) -> int:
    from lepton_edge.devtools.compare import compare, parse_selection
    from lepton_edge.devtools.recording import read_recording

    for name in ("min_map", "ref_score", "score", "iou"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
    result = compare(read_recording(args.a), read_recording(args.b), iou=args.iou,
                     ref_score=args.ref_score, score=args.score,
                     frames=[parse_selection(f) for f in args.frames], cameras=args.camera,
                     worst=max(0, args.worst))
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), **result.as_dict()}))
    else:
        print(f"A: {args.a}\nB: {args.b}")
        print(result.format())
    if args.min_map is not None and result.map50 < args.min_map:
        print(f"diff: agreement mAP50 {result.map50:.4f} is below --min-map {args.min_map}")
        return 1
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", type=Path, metavar="RUN.jsonl", help="a recording")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")


def run_report(args: argparse.Namespace) -> int:
    from lepton_edge.devtools.recording import read_recording
    from lepton_edge.devtools.report import write_report

    for path in write_report(read_recording(args.recording), args.out, dpi=args.dpi):
        print(path)
    return 0
