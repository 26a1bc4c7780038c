from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lepton_edge.artifact import describe_onnx, load_artifact
from lepton_edge.errors import ModelError
from tests.conftest import ENGINE


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


# Issue 15 item 9 (red on 5b6f079: the YAML error's 7 lines, marks and carets, in the message).
def test_a_corrupt_manifest_is_one_line_with_its_line_number(tmp_path: Path) -> None:
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("*.int8*", "openvino*", "cache"))
    text = (art / "manifest.yaml").read_text().splitlines()
    text[3] = text[3] + " : ] {"
    (art / "manifest.yaml").write_text("\n".join(text))
    with pytest.raises(ModelError) as info:
        load_artifact(art)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{art / 'manifest.yaml'}:4: not valid YAML (")
    assert "rebuild the artifact" in message


@pytest.mark.parametrize(("change", "error"), [
    (lambda m: m.pop("input"), "malformed manifest (key 'input' missing)"),
    (lambda m: m.update(classes=5), "malformed manifest ("),
    (lambda m: m.update(models={"fp32": "model.onnx"}), "each encoding needs a file"),
])
def test_a_malformed_manifest_is_one_line(tmp_path: Path, change, error: str) -> None:
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("*.int8*", "openvino*", "cache"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    change(manifest)
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError) as info:
        load_artifact(art, verify=False)
    assert error in str(info.value) and "\n" not in str(info.value)
