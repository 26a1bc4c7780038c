"""`lepton-edge trigger ENDPOINT --camera ID` and `lepton-edge verdicts export`.

`add_parsers(subparsers)` adds both to the main command line (cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lepton_edge.errors import ConfigError, LeptonError


class TriggerTimeoutError(LeptonError):
    """No station answered a software trigger in time."""

    exit_code = 8


def send_trigger(endpoint: str, camera: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """Fire one software trigger; the station's reply ({"v", "camera", "trigger_id"})."""
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(json.dumps({"camera": camera} if camera else {}).encode())
        if not sock.poll(int(timeout * 1000)):
            raise TriggerTimeoutError(f"trigger {endpoint}: no reply in {timeout:g} s; is the "
                                      f"daemon running with a software trigger there?")
        reply = json.loads(sock.recv())
    except zmq.ZMQError as err:
        raise ConfigError(f"trigger {endpoint}: {err}") from err
    finally:
        sock.close()
    if "error" in reply:
        raise ConfigError(f"trigger {endpoint}: the station refused: {reply['error']}")
    return reply


def run_trigger(args: argparse.Namespace) -> int:
    for _ in range(args.count):
        reply = send_trigger(args.endpoint, args.camera, args.timeout)
        print(json.dumps(reply) if args.json else reply["trigger_id"], flush=True)
    return 0


def _epoch(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as err:
        raise ConfigError(f"{flag} {text!r}: expected an ISO date or time, e.g. "
                          f"2026-12-01 or 2026-12-01T06:00") from err
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as on the shop floor
    return when.astimezone(timezone.utc).timestamp()


def _log_path(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if args.state_dir:
        return Path(args.state_dir) / "verdicts.sqlite"
    if args.config:
        from lepton_edge.config import load_config

        config = load_config(args.config)
        if config.state_dir:
            return config.resolve(config.state_dir) / "verdicts.sqlite"
    from lepton_edge.engine_cache import default_state_dir

    return default_state_dir() / "verdicts.sqlite"


def run_export(args: argparse.Namespace) -> int:
    from lepton_edge.sinks.verdict_log import VerdictLog, export

    path = _log_path(args)
    if not path.is_file():
        raise ConfigError(f"verdicts export: no verdict log at {path}; pass --db FILE or "
                          f"--state-dir DIR (the daemon's state_dir)")
    since, until = _epoch(args.since, "--since"), _epoch(args.until, "--until")
    with VerdictLog(path) as vlog:
        rows = vlog.rows(args.camera, since, until)
        if args.output and args.output != "-":
            with open(args.output, "w", newline="") as out:
                n = export(rows, out, args.format)
        else:
            n = export(rows, sys.stdout, args.format)
    print(f"verdicts export: {n} rows from {path}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trigger", help="fire an inspection station's software trigger")
    p.add_argument("endpoint", help="the station's trigger endpoint, e.g. tcp://127.0.0.1:5560")
    p.add_argument("--camera", help="the camera the trigger is for (checked by the station)")
    p.add_argument("--count", type=int, default=1, help="fire N triggers, one after another")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply")
    p.add_argument("--json", action="store_true", help="print the whole reply")
    p.set_defaults(func=run_trigger)

    v = sub.add_parser("verdicts", help="the inspection verdict log")
    vsub = v.add_subparsers(dest="verdicts_command", required=True, metavar="ACTION")
    e = vsub.add_parser("export", help="write the verdict log as CSV or JSON")
    where = e.add_mutually_exclusive_group()
    where.add_argument("--db", help="the log file (verdicts.sqlite)")
    where.add_argument("--state-dir", help="the daemon's state directory")
    where.add_argument("--config", "-c", help="the daemon's config (its state_dir)")
    e.add_argument("--camera", help="only this camera")
    e.add_argument("--since", help="from this local date/time (ISO 8601)")
    e.add_argument("--until", help="before this local date/time (ISO 8601)")
    e.add_argument("--format", choices=["csv", "json"], default="csv")
    e.add_argument("--output", "-o", help="file to write (default: standard output)")
    e.set_defaults(func=run_export)


def main(argv: list[str] | None = None) -> int:
    """The two commands on their own (`python -m lepton_edge.analysis.inspection.commands`),
    with the main CLI's one-line errors; `lepton-edge` runs the same functions."""
    from lepton_edge import logs

    parser = argparse.ArgumentParser(prog="lepton-edge")
    add_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    logs.configure("warning")
    try:
        return int(args.func(args) or 0)
    except LeptonError as err:
        print(f"lepton-edge: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
