from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lepton_edge.artifact import describe_onnx, load_artifact
from lepton_edge.errors import ModelError

from .conftest import ENGINE


def test_bundled_artifact_loads_and_verifies() -> None:
    art = load_artifact(ENGINE)
    assert art.name == "yolov8n" and art.family == "yolov8" and len(art.classes) == 80
    assert art.classes[0] == "person" and art.input.name == "images"
    assert art.input.fixed_hw is None
    enc, path = art.pick("onnxruntime", "fp32")
    assert enc == "fp32" and path.name == "model.onnx"


def test_bare_onnx_file_is_an_fp32_artifact() -> None:
    art = load_artifact(ENGINE / "model.onnx")
    assert art.classes[:3] == ("person", "bicycle", "car")
    assert list(art.models) == ["fp32"]


def test_missing_encoding_says_what_exists(tmp_path: Path) -> None:
    art = load_artifact(ENGINE / "model.onnx")
    with pytest.raises(ModelError, match="precision 'int8' on onnxruntime needs one of "
                                         "int8-cpu, int8-device, the artifact has fp32"):
        art.pick("onnxruntime", "int8")


@pytest.mark.parametrize(("mutate", "error"), [
    (lambda d: (d / "manifest.yaml").unlink(), "no manifest.yaml in this directory"),
    (lambda d: (d / "manifest.yaml").write_text("format: other\n"),
     "not a lepton-edge manifest"),
    (lambda d: (d / "manifest.yaml").write_text(": : :\n  - ["), "not valid YAML"),
    (lambda d: (d / "model.onnx").unlink(), "listed in the manifest but missing"),
    (lambda d: (d / "model.onnx").write_bytes(b"x"), "does not match the manifest"),
])
def test_broken_artifacts_name_the_file(tmp_path: Path, mutate, error: str) -> None:
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("*.int8*", "openvino*"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    manifest["models"] = {"fp32": manifest["models"]["fp32"]}
    manifest["files"] = {"model.onnx": manifest["files"]["model.onnx"]}
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    mutate(art)
    with pytest.raises(ModelError, match=error):
        load_artifact(art)


def test_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match=r"x\.onnx: not a valid ONNX model"):
        describe_onnx(bad)
