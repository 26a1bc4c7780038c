"""`lepton-edge schema`: the generated JSON Schemas accept what the code writes and reads, and
refuse what it refuses."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("jsonschema", reason="needs jsonschema (the dev extra)")
import jsonschema

from lepton_edge.detections import Detections
from lepton_edge.messages import CameraHealth, HealthMessage, detections_payload, health_payload
from lepton_edge.schema import add_parser, schemas, write_schemas
from tests.conftest import REPO


@pytest.fixture(scope="module")
def all_schemas() -> dict[str, dict]:
    out = schemas()
    for s in out.values():
        jsonschema.Draft202012Validator.check_schema(s)
    return out


def _errors(schema: dict, doc: object) -> list[str]:
    """Every error's message, with those of the branches of an anyOf (an optional section)."""
    out, todo = [], list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    while todo:
        e = todo.pop()
        out.append(e.message)
        todo.extend(e.context or ())
    return out


@pytest.mark.parametrize("path", sorted((REPO / "deploy").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(all_schemas, path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert _errors(all_schemas["config.schema.json"], doc) == []


@pytest.mark.parametrize(("change", "needle"), [
    ({"colour": "red"}, "colour"),
    ({"cameras": []}, "[]"),
    ({"precision": "int4"}, "int4"),
    ({"mqtt": {"host": "broker", "qos": 3}}, "3"),
    ({"mqtt": {"port": 1883}}, "host"),
    ({"http": {"port": 8080, "hots": "0.0.0.0"}}, "hots"),
])
def test_config_schema_refuses(all_schemas, change, needle) -> None:
    doc = {"model": "engines/yolov8n", "cameras": [{"id": "a", "url": "x.avi"}], **change}
    errors = _errors(all_schemas["config.schema.json"], doc)
    assert errors and any(needle in e for e in errors), errors


def test_config_schema_accepts_the_sinks(all_schemas) -> None:
    doc = {"model": "m", "cameras": [{"id": "a", "url": "x.avi"}],
           "mqtt": {"host": "broker", "username": "box", "password_file": "pw",
                    "tls": {"ca_file": "ca.pem"}, "qos": 1},
           "http": {"host": "0.0.0.0", "port": 8080, "token_file": "token"}}
    assert _errors(all_schemas["config.schema.json"], doc) == []


def test_wire_messages_validate(all_schemas) -> None:
    dets = Detections(xyxy=np.array([[1, 2, 30, 40]], "float32"),
                      score=np.array([0.9], "float32"), class_id=np.array([0], "int32"))
    det = json.loads(detections_payload(
        camera="plaza", seq=3, frame=3, ts=time.time(), width=768, height=576, model="yolov8n",
        precision="fp32", latency_ms={"infer": 12.5}, detections=dets, labels=["person"]))
    assert _errors(all_schemas["det.schema.json"], det) == []
    det["detections"][0]["score"] = "high"
    assert _errors(all_schemas["det.schema.json"], det)
    health = json.loads(health_payload(HealthMessage(
        ts=time.time(), state="running", uptime_s=3, fps=9.5, subscribers=1,
        cameras=(CameraHealth("plaza", "connected", 9.5, 30, 0, 0, 30),))))
    assert _errors(all_schemas["health.schema.json"], health) == []
    del health["cameras"][0]["frames"]
    assert _errors(all_schemas["health.schema.json"], health)


def test_outcome_messages_validate(all_schemas) -> None:
    from tests.sinks.conftest import event

    ev = json.loads(event("plaza", 4, kind="end", zones=["door"]).to_payload())
    assert _errors(all_schemas["event.schema.json"], ev) == []
    assert _errors(all_schemas["event.schema.json"], {**ev, "type": "begin"})
    verdict = {"v": 1, "camera": "line1", "trigger_id": 7, "verdict": "fail",
               "reasons": [{"code": "missing", "roi": "cap", "rule": "count", "expected": 1,
                            "found": 0}],
               "rois": {"cap": []}, "latency_ms": 41.2, "part_count": 7, "ts_trigger": 1.0,
               "ts": 1.1, "frame": 70, "evidence": None}
    assert _errors(all_schemas["verdict.schema.json"], verdict) == []
    assert _errors(all_schemas["verdict.schema.json"], {**verdict, "verdict": "maybe"})


def test_the_command_writes_the_files(tmp_path) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(["schema", "--out", str(tmp_path / "schema")])
    assert args.func(args) == 0
    names = sorted(p.name for p in (tmp_path / "schema").iterdir())
    assert names == ["config.schema.json", "det.schema.json", "event.schema.json",
                     "health.schema.json", "verdict.schema.json"]
    assert write_schemas(tmp_path / "again")[0].read_text() == (
        tmp_path / "schema" / "config.schema.json").read_text()  # deterministic
