"""`lepton-edge`: the command line. Each subcommand imports what it needs when it runs, so
`--help` works with no optional dependency installed. A LeptonError is printed as one line
(`lepton-edge: error: ...`) with its exit code, never as a traceback.

`run` and `bench` resolve the config once (`lepton_edge.run.resolve_run`) with their flags as
overrides validated like the file (`--endpoint`, `--log-level`, `bench --backend`), so an error
names the flag. `--log-level` goes before or after the subcommand and beats the config's
`log_level`. Help shows every default."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_edge import __version__
from lepton_edge.errors import LeptonError

if TYPE_CHECKING:
    from lepton_edge.config import Config, Override

LOG_LEVELS = ("debug", "info", "warning", "error")
# The bundled sample config, found next to the package in a checkout (an editable install);
# a wheel does not carry deploy/, so there `bench` asks for --config.
BUNDLED_BENCH = Path(__file__).resolve().parent.parent / "deploy" / "bench.yaml"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` after an option's help, except where the help already states it
    or there is nothing to show (None, a flag that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or \
                default is argparse.SUPPRESS or not action.option_strings:
            return text
        return super()._get_help_string(action) or text


def log_level_overrides(args: argparse.Namespace) -> list[Override]:
    """`--log-level` as a config override: the flag beats the file's `log_level`."""
    from lepton_edge.config import Override

    level = getattr(args, "log_level", None)
    return [Override("log_level", level, "--log-level")] if level else []


def _cmd_run(args: argparse.Namespace) -> int:
    from lepton_edge.config import Override
    from lepton_edge.run import RunOptions, resolve_run
    from lepton_edge.service.daemon import main_run

    overrides = log_level_overrides(args)
    if args.endpoint is not None:
        overrides.append(Override("publish.endpoint", args.endpoint,
                                  f"--endpoint {args.endpoint}"))
    run = resolve_run(args.config, overrides, options=RunOptions(
        record=Path(args.record) if args.record else None,
        wait_subscribers=args.wait_subscribers))
    on_frame = None
    annotator = None
    if args.annotate:
        from lepton_edge.devtools.annotate import Annotator

        annotator = Annotator(Path(args.annotate), fps=_source_fps(run.config))
        on_frame = annotator.add
    try:
        return main_run(run, on_frame=on_frame)
    finally:
        if annotator is not None:
            annotator.close()


def _source_fps(config: Config, default: float = 10.0) -> float:
    """The first camera's own frame rate, so an annotated replay plays at the clip's speed."""
    import cv2

    from lepton_edge.pipeline.sources import classify

    url = config.camera_url(config.cameras[0])
    if classify(url) != "file":
        return default  # never open a network camera here just to ask its rate
    cap = cv2.VideoCapture(url)
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    return fps if 0 < fps < 1000 else default


def _cmd_subscribe(args: argparse.Namespace) -> int:
    from lepton_edge.errors import ConfigError
    from lepton_edge.messages import DetectionMessage, EventMessage, HealthMessage, VerdictMessage
    from lepton_edge.subscribe import Subscriber

    if any(not c for c in args.camera or ()):
        raise ConfigError("--camera: an empty camera id would match every camera; give an id "
                          "from the daemon's cameras[].id")
    counts: dict[str, int] = {}
    per_class: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    code = 0
    warn_after = args.warn_after if args.warn_after > 0 else None
    with Subscriber(args.endpoint, args.camera or None, silence_warning=warn_after,
                    **_curve_options(args)) as sub:
        try:
            for msg in sub.messages(timeout=args.timeout):
                if isinstance(msg, DetectionMessage):
                    counts[msg.camera] = counts.get(msg.camera, 0) + 1
                    for d in msg.detections:
                        per_class[d.label] = per_class.get(d.label, 0) + 1
                    if not args.quiet:
                        print(_format_detection(msg, args.json), flush=True)
                elif isinstance(msg, EventMessage | VerdictMessage):
                    kind = "event" if isinstance(msg, EventMessage) else "verdict"
                    outcomes[kind] = outcomes.get(kind, 0) + 1
                    if not args.quiet:
                        print(msg.model_dump_json() if args.json else _format_outcome(msg),
                              flush=True)
                elif isinstance(msg, HealthMessage):
                    if args.json and not args.quiet:
                        print(json.dumps({"health": msg.state, "fps": msg.fps}), flush=True)
                    if args.until_stop and msg.state == "stopping":
                        break
                if args.count and sum(counts.values()) >= args.count:
                    break
            else:
                if args.until_stop:
                    print(f"subscribe: no message for {args.timeout:g} s", file=sys.stderr)
                    code = 1
                if (sub.heard_nothing and warn_after is not None and args.timeout is not None
                        and args.timeout < warn_after):
                    print(f"subscribe: {sub.silence_hint()}", file=sys.stderr)  # not logged yet
        except KeyboardInterrupt:
            pass
        if args.summary:
            total = sum(counts.values())
            print(f"subscriber summary: {total} messages from {len(counts)} camera(s)", flush=True)
            for cam, n in counts.items():
                print(f"  {cam}: {n} messages, {sub.missed.get(cam, 0)} missed (seq gaps)")
            top = sorted(per_class.items(), key=lambda kv: -kv[1])
            print("  detections: " + (", ".join(f"{k} {v}" for k, v in top) or "none"))
            if outcomes:
                print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
            if sub.invalid:
                print(f"  {sub.invalid} malformed messages skipped")
    return code


def _curve_options(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.curve_server_key or args.curve_client_key):
        return {}
    from lepton_edge.errors import ConfigError

    if not (args.curve_server_key and args.curve_client_key):
        raise ConfigError("--curve-server-key and --curve-client-key go together")
    import zmq.auth

    from lepton_edge.subscribe import load_client_keys

    try:
        server_public = zmq.auth.load_certificate(args.curve_server_key)[0]
        client = load_client_keys(Path(args.curve_client_key))
    except (OSError, ValueError) as err:
        raise ConfigError(f"CURVE keys: {err}") from err
    return {"curve_server_public": server_public, "curve_client_keys": client}


def _format_outcome(msg: Any) -> str:
    """One line per event or verdict, e.g. `event plaza start person #3 (0.91) zones door`."""
    from lepton_edge.messages import EventMessage

    if isinstance(msg, EventMessage):
        zones = f" zones {','.join(msg.zones)}" if msg.zones else ""
        end = f" ({msg.reason})" if msg.type == "end" else ""
        return (f"event {msg.camera} {msg.type} {msg.label} #{msg.track_id} "
                f"({msg.top_score:.2f}){zones}{end}")
    reasons = "; ".join(r.code for r in msg.reasons)
    return f"verdict {msg.camera} {msg.trigger_id} {msg.verdict}" + (f": {reasons}"
                                                                    if reasons else "")


def _format_detection(msg: object, as_json: bool) -> str:
    from dataclasses import asdict

    if as_json:
        return json.dumps(asdict(msg))  # type: ignore[call-overload]
    from lepton_edge.messages import DetectionMessage

    assert isinstance(msg, DetectionMessage)
    shown = ", ".join(f"{d.label} {d.score:.2f}" for d in msg.detections[:6])
    more = f" +{len(msg.detections) - 6}" if len(msg.detections) > 6 else ""
    lat = msg.latency_ms.get("capture_to_publish", 0.0)
    return (f"{msg.camera} seq={msg.seq} frame={msg.frame} {len(msg.detections)} det "
            f"({lat:.0f} ms): {shown}{more}")


def _cmd_bench(args: argparse.Namespace) -> int:
    from lepton_edge.devtools.bench import main_bench

    return main_bench(args)


def _cmd_keys(args: argparse.Namespace) -> int:
    from lepton_edge.keys import main_keys

    return main_keys(args)


def _log_level_parent() -> argparse.ArgumentParser:
    """`--log-level` after the subcommand too; SUPPRESS keeps one given before it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                        help="log level (run, bench: beats the config's log_level; default: "
                             "the config's, else info)")
    return parent


def _parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> Any:
    return sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:],
                          formatter_class=_HelpFormatter, parents=[_log_level_parent()])


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "run", "run the daemon on a config file")
    p.add_argument("--config", "-c", required=True, help="YAML config file")
    p.add_argument("--endpoint", help="override publish.endpoint (e.g. tcp://127.0.0.1:5556)")
    p.add_argument("--record", metavar="FILE.jsonl", help="write every published message")
    p.add_argument("--annotate", metavar="OUT.webm",
                   help="write the frames with their boxes; the codec follows the suffix: "
                        ".webm VP8 (for browsers), .mp4 H.264 where OpenCV has it, .mkv VP8, "
                        ".avi Motion JPEG")
    p.add_argument("--wait-subscribers", type=int, default=0, metavar="N",
                   help="wait (up to 10 s) for N subscriptions before the first frame")
    p.set_defaults(func=_cmd_run)


def _add_subscribe(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "subscribe", "print the messages a daemon publishes")
    p.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5556")
    p.add_argument("--camera", action="append",
                   help="only this camera, matched exactly (repeatable)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quiet", action="store_true", help="print nothing per message")
    p.add_argument("--count", type=int, default=0, help="exit after N detection messages")
    p.add_argument("--timeout", type=float, default=None,
                   help="exit after this many seconds without a message")
    p.add_argument("--until-stop", action="store_true",
                   help="exit when the daemon announces it is stopping")
    p.add_argument("--warn-after", type=float, default=10.0, metavar="SECONDS",
                   help="say so (and that the endpoint or CURVE keys may be wrong) when nothing "
                        "at all arrived within this many seconds (default 10; 0: never)")
    p.add_argument("--summary", action="store_true", help="print counts at the end")
    p.add_argument("--curve-server-key", metavar="SERVER.key",
                   help="the daemon's public key (CURVE); needs --curve-client-key")
    p.add_argument("--curve-client-key", metavar="CLIENT.key_secret",
                   help="this client's keypair, whose public half the daemon allows")
    p.set_defaults(func=_cmd_subscribe)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "bench", "per-stage latency and fps against bare inference")
    p.add_argument("--config", "-c", default=str(BUNDLED_BENCH) if BUNDLED_BENCH.is_file()
                   else None, help="YAML config whose video files to run (default: the "
                   "checkout's deploy/bench.yaml, wherever you run it from)"
                   + ("" if BUNDLED_BENCH.is_file() else "; required in this installation"))
    p.add_argument("--frames", type=int, default=0, help="stop after N frames (0: whole clip)")
    p.add_argument("--backend", action="append",
                   help="compare several: backend[:precision][,option=value...] (repeatable), "
                        "e.g. openvino:int8 or openvino:int8,input=tensor")
    p.add_argument("--bare-seconds", type=float, default=10.0,
                   help="seconds of bare inference (half before, half after the run)")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(func=_cmd_bench)


def _add_keys(sub: argparse._SubParsersAction) -> None:
    p = _parser(sub, "keys", "generate ZeroMQ CURVE keypairs")
    p.add_argument("--dir", default=".", help="where to write NAME.key and NAME.key_secret")
    p.add_argument("--name", default="server",
                   help="keypair name: writes NAME.key and NAME.key_secret")
    p.add_argument("--force", action="store_true", help="replace an existing keypair")
    p.set_defaults(func=_cmd_keys)


def _optional(sub: argparse._SubParsersAction, module: str,
              adders: Sequence[tuple[str, str, str, str]]) -> None:
    """Subcommands whose argument builders live in their own module (compiler, bench tools)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return
    for name, help_text, add_fn, run_fn in adders:
        if not hasattr(mod, add_fn):
            continue
        p = _parser(sub, name, help_text)
        getattr(mod, add_fn)(p)
        p.set_defaults(func=getattr(mod, run_fn))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lepton-edge", formatter_class=_HelpFormatter,
        description="Edge inference runtime for cameras: video -> YOLO -> ZeroMQ.")
    parser.add_argument("--version", action="version", version=f"lepton-edge {__version__}")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS,
                        help="log level (also accepted after the subcommand; beats the config's "
                             "log_level; default: the config's, else info)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_subscribe(sub)
    _add_bench(sub)
    _optional(sub, "lepton_edge.compiler.commands", [
        ("compile", "quantize a model to INT8 and build an artifact", "add_compile_arguments",
         "run_compile"),
        ("eval", "score an artifact's precisions", "add_eval_arguments", "run_eval"),
    ])
    _optional(sub, "lepton_edge.devtools", [
        ("diff", "compare two recordings", "add_diff_arguments", "run_diff"),
        ("report", "plot a recording", "add_report_arguments", "run_report"),
    ])
    _add_keys(sub)
    from lepton_edge import schema
    from lepton_edge.analysis.inspection.commands import add_parsers as add_inspection

    schema.add_parser(sub)
    add_inspection(sub)  # trigger, verdicts export
    from lepton_edge.analysis.gate import add_parser as add_gate

    add_gate(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lepton_edge import logs

    parser = build_parser()
    args = parser.parse_args(argv)
    logs.configure(args.log_level or "info")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except LeptonError as err:
        print(f"lepton-edge: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
