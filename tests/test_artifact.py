from __future__ import annotations

import logging
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


def _gate(score: float, below: bool, floor: float = 0.95) -> dict:
    return {"metric": "map50_min20", "score": score, "floor": floor, "below_floor": below,
            "map50_min20": score, "map50": score - 0.1, "map50_agnostic": score,
            "map50_95": score - 0.05}


def _marked_artifact(tmp_path: Path, gates: dict[str, dict]) -> Path:
    """A copy of the bundled artifact (every file) whose manifest carries `gates`."""
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("cache"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    for enc, g in gates.items():
        manifest["models"][enc]["gate"] = g
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return art


def test_running_a_below_floor_encoding_warns_with_its_score_and_the_better_choice(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lepton_edge.backends import BackendOptions, create_backend

    art = load_artifact(_marked_artifact(tmp_path, {
        "int8-cpu": _gate(0.9318, True), "int8-device": _gate(0.9161, True),
        "int8-openvino": _gate(0.9534, False), "fp16": _gate(0.998, False)}))
    with caplog.at_level(logging.WARNING, logger="lepton_edge.artifact"), \
            create_backend("onnxruntime", art, BackendOptions(precision="int8")) as backend:
        assert backend.encoding == "int8-cpu"
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "onnxruntime:int8 runs int8-cpu, which the compile marked below its accuracy " \
           "floor: min20 0.932 < floor 0.95" in message
    assert message.endswith("better: openvino:int8 scores 0.953 min20 (int8-openvino); on this "
                            "runtime: onnxruntime:fp16 scores 0.998 min20 (fp16)")

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lepton_edge.artifact"):
        assert art.pick("openvino", "int8")[0] == "int8-openvino"  # above its floor
        assert art.pick("onnxruntime", "fp32")[0] == "fp32"  # the reference: no gate
        assert art.pick("onnxruntime", "int8", warn=False)[0] == "int8-cpu"
    assert not caplog.records


def test_no_encoding_at_its_floor_says_fp32_is_the_reference(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    art = load_artifact(_marked_artifact(tmp_path, {
        "int8-cpu": _gate(0.9318, True), "int8-device": _gate(0.9161, True),
        "int8-openvino": _gate(0.90, True, floor=0.97), "fp16": _gate(0.96, True, 0.99)}))
    with caplog.at_level(logging.WARNING, logger="lepton_edge.artifact"):
        assert art.pick("tensorrt", "int8")[0] == "int8-device"
    assert "tensorrt:int8 runs int8-device" in caplog.text
    assert "min20 0.916 < floor 0.95" in caplog.text
    assert "no other scored encoding of this artifact reaches its floor (fp32 is the " \
           "reference)" in caplog.text
