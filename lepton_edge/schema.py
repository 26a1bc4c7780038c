"""`lepton-edge schema`: JSON Schema files generated from the code, so editors complete the
config (`# yaml-language-server: $schema=config.schema.json`) and programs in other languages
validate the messages.

Written: `config.schema.json` (the daemon's YAML config, from the pydantic models),
`det.schema.json` and `health.schema.json` (the ZeroMQ wire messages, from their dataclasses),
`event.schema.json` and `verdict.schema.json` (the outcome payloads, also on MQTT).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, create_model

from lepton_edge.config import Config
from lepton_edge.messages import DetectionMessage, EventMessage, HealthMessage, VerdictMessage

DRAFT = "https://json-schema.org/draft/2020-12/schema"
def config_model() -> type[BaseModel]:
    """Config with the `mqtt:` and `http:` sections (added here until Config has them)."""
    extra: dict[str, Any] = {}
    try:
        from lepton_edge.sinks.mqtt import MqttConfig

        if "mqtt" not in Config.model_fields:
            extra["mqtt"] = (MqttConfig | None, None)
    except ImportError:  # pragma: no cover - the module imports paho lazily
        pass
    from lepton_edge.sinks.http.config import HttpConfig

    if "http" not in Config.model_fields:
        extra["http"] = (HttpConfig | None, None)
    if not extra:
        return Config
    return create_model("Config", __base__=Config, **extra)


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema."""
    config = config_model().model_json_schema()
    config["properties"].pop("source", None)  # set by the loader, not a key of the file
    out = {
        "config.schema.json": _titled(config, "lepton-edge config"),
        "det.schema.json": _titled(TypeAdapter(DetectionMessage).json_schema(),
                                   "lepton-edge det.<camera> message"),
        "health.schema.json": _titled(TypeAdapter(HealthMessage).json_schema(),
                                      "lepton-edge health message"),
        "event.schema.json": _titled(EventMessage.model_json_schema(),
                                     "lepton-edge event.<camera> message"),
        "verdict.schema.json": _titled(VerdictMessage.model_json_schema(),
                                       "lepton-edge verdict.<camera> message"),
    }
    return out


def _titled(schema: dict[str, Any], title: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, **{k: v for k, v in schema.items()
                                                  if k != "title"}}


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out_dir / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
        written.append(path)
    return written


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="write the config and message JSON Schema files")
    p.add_argument("--out", type=Path, default=Path("schema"),
                   help="directory to write the *.schema.json files into (default: schema/)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    for path in write_schemas(args.out):
        print(path)
    return 0
