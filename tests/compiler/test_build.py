"""The compile steps end to end on a small calibration set, with the real bundled model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from lepton_edge.artifact import load_artifact
from lepton_edge.backends import BackendOptions, create_backend
from lepton_edge.compiler import commands
from lepton_edge.compiler.build import compile_model, conv_groups, gate_record, tail_nodes
from lepton_edge.compiler.quantize import qdq_summary
from lepton_edge.errors import CompileError, ModelError
from tests.compiler.conftest import MODEL, SAMPLES, small_options


def test_artifact_has_both_encodings_and_a_complete_manifest(small_artifact: Path) -> None:
    m = yaml.safe_load((small_artifact / "manifest.yaml").read_text())
    assert set(m["models"]) == {"fp32", "fp16", "int8-cpu", "int8-device"}
    assert m["precisions"] == ["fp16", "fp32", "int8"]
    assert (small_artifact / "model.onnx").read_bytes() == MODEL.read_bytes()
    assert set(m["files"]) == {"model.onnx", "model.int8-cpu.onnx", "model.int8-device.onnx",
                               "model.fp16.onnx", "calibration.cache"}
    assert m["calibration"]["frames"] == 21 and len(m["calibration"]["sha256"]) == 64
    assert m["quantization"]["calibration"] == "minmax"
    assert any(n.startswith("/model.22/dfl") for n in m["quantization"]["kept_in_float"])
    acc = m["accuracy"]
    assert acc["frames"] == 23 and acc["reference_boxes"] > 50
    assert 0.3 <= acc["int8-cpu"]["map50"] <= 1.0
    assert 0.0 <= acc["int8-device"]["map50_95"] <= 1.0
    assert acc["fp16"]["map50"] >= 0.95 and acc["fp16"]["frames"] == 23  # scored like INT8
    assert acc["min_class_boxes"] == 20 and acc["floor"] == 0.3
    assert acc["gate_metric"] == "map50_min20"
    for entry in (acc["int8-cpu"], acc["int8-device"], *acc["curve"]):
        assert 1 <= entry["classes_scored_min20"] <= entry["classes_scored"]  # person, at least
        assert 0.0 <= entry["map50_min20"] <= 1.0 and 0.0 <= entry["map50_95_min20"] <= 1.0
        assert 0.0 < entry["map50_agnostic"] <= 1.0
        assert "ms_per_frame" not in entry  # speeds are logged: the manifest is reproducible
    assert "gate" not in m["models"]["fp32"]  # the reference
    for enc in ("int8-cpu", "int8-device", "fp16"):
        gate, recipe = m["models"][enc]["gate"], m["models"][enc]["recipe"]
        assert gate["metric"] == "map50_min20" and gate["floor"] == 0.3
        assert gate["score"] == gate["map50_min20"] == acc[enc]["map50_min20"]
        assert gate["map50"] == acc[enc]["map50"]
        assert gate["map50_agnostic"] == acc[enc]["map50_agnostic"]
        assert gate["map50_95"] == acc[enc]["map50_95"]
        assert gate["below_floor"] is (gate["score"] < 0.3)
        assert recipe["versions"]["lepton-edge"] and recipe["versions"]["onnx"]
    recipe = m["models"]["int8-cpu"]["recipe"]
    assert recipe["tool"].startswith("ORT quantizer") and recipe["frames"] == 21
    assert recipe["calibration"] == "minmax of the activations"
    assert recipe["kept_in_float"] == ["head tail"] and recipe["bias_correction"] == "none"
    assert recipe["versions"]["onnxruntime"]
    recipe = m["models"]["int8-device"]["recipe"]
    assert recipe["tool"].startswith("lepton-edge Q/DQ writer") and recipe["frames"] == 21
    assert recipe["calibration"].startswith("MSE-optimal")
    assert recipe["kept_in_float"] == ["head tail", "/model.0/conv/Conv", "/model.1/conv/Conv",
                                       "/model.2/cv1/conv/Conv"]
    assert recipe["bias_correction"].startswith("per layer")
    assert recipe["bias"] == "float (not quantized)" and recipe["versions"]["onnxruntime"]
    assert m["classes"][0] == "person" and m["input"]["name"] == "images"
    load_artifact(small_artifact)  # sha256 of every file verified


def test_cpu_encoding_is_u8s8_and_device_encoding_is_tensorrt_shaped(
        small_artifact: Path) -> None:
    cpu = qdq_summary(small_artifact / "model.int8-cpu.onnx")
    dev = qdq_summary(small_artifact / "model.int8-device.onnx")
    assert cpu["activation_zero_point_types"] == ["uint8"]
    assert cpu["int32_initializers"] > 0  # ORT's CPU kernels take int32 bias
    assert dev["activation_zero_point_types"] == ["int8"]
    assert dev["nonzero_activation_zero_points"] == 0  # symmetric
    assert dev["int32_initializers"] == 0  # float bias: TensorRT rejects int32 bias
    assert dev["quantize_nodes"] == 55  # conv inputs only: SiLU, Add, Concat stay float


def test_daemon_backend_runs_the_int8_cpu_encoding(small_artifact: Path) -> None:
    art = load_artifact(small_artifact)
    with create_backend("onnxruntime", art, BackendOptions(precision="int8")) as backend:
        assert backend.encoding == "int8-cpu"
        out = backend.submit(np.full((1, 3, 512, 640), 0.5, np.float32)).wait()
    assert out[0].shape == (1, 84, 6720)


def test_gate_refuses_a_model_quantized_to_the_last_node(small_spec: Path,
                                                         tmp_path: Path) -> None:
    opts = small_options(small_spec, tmp_path, float_tail=False, device=False)
    with pytest.raises(CompileError, match=r"gate failed: agreement map50_min20 0\.0\d\d "
                                           r"\(all-class mAP50 0\.0\d\d\) < floor 0\.3 .*"
                                           r"--mark-below-floor") as info:
        compile_model(opts)
    assert "\n" not in str(info.value)


def test_below_the_floor_an_encoding_is_written_marked_with_a_warning(
        small_spec: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`--mark-below-floor` (what `make engines` passes): the primary encoding below the floor
    is written and marked instead of failing the compile, like every other encoding."""
    opts = small_options(small_spec, tmp_path, floor=0.999, mark_below_floor=True,
                         fp16=False)
    with caplog.at_level(logging.WARNING, logger="lepton_edge.compile"):
        out = compile_model(opts)
    m = yaml.safe_load((out / "manifest.yaml").read_text())
    for enc in ("int8-cpu", "int8-device"):
        gate = m["models"][enc]["gate"]
        assert gate["below_floor"] is True and gate["floor"] == 0.999
        assert f"compile: {enc} is below the floor: map50_min20 {gate['score']:.3f} < 0.999 " \
               f"(all-class mAP50 {gate['map50']:.3f}); written and marked below_floor" \
               in caplog.text
    load_artifact(out)


def test_tail_and_groups_follow_the_yolov8_head() -> None:
    tail = tail_nodes(MODEL)
    assert tail and all(n.startswith("/model.22/") for n in tail)
    assert not any("/cv2." in n or "/cv3." in n for n in tail)
    groups = conv_groups(MODEL, set(tail))
    assert groups["/model.2/cv1/"] == ["/model.2/cv1/conv/Conv", "/model.2/cv1/act/Sigmoid",
                                       "/model.2/cv1/act/Mul"]
    assert "/model.22/cv2.0/cv2.0.2/Conv" in groups


def _compile_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.add_compile_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(("setup", "error", "message"), [
    (lambda d: (d / "nope.onnx", SAMPLES / "images"), CompileError, "model file not found"),
    (lambda d: (_write(d / "x.onnx", b"not a model"), SAMPLES / "images"), ModelError,
     "not a valid ONNX model"),
    (lambda d: (MODEL, d), CompileError, "no images in the calibration path"),
    (lambda d: (MODEL, d / "missing"), CompileError, "calibration path not found"),
])
def test_compile_errors_are_one_clear_line(tmp_path: Path, setup, error, message) -> None:
    model, calib = setup(tmp_path)
    args = _compile_args(str(model), "--calib", str(calib), "--name", "x",
                         "--out", str(tmp_path / "engines"), "--no-progress")
    with pytest.raises(error, match=message) as info:
        commands.run_compile(args)
    assert "\n" not in str(info.value)
    assert info.value.exit_code in (3, 6)


def test_eval_scores_every_precision_against_float(small_artifact: Path, small_spec: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    commands.add_eval_arguments(parser)
    assert commands.run_eval(parser.parse_args([str(small_artifact), "--data", str(small_spec),
                                                "--json"])) == 0
    out = yaml.safe_load(capsys.readouterr().out)  # JSON is YAML
    assert out["scores"]["fp32"]["map50"] == pytest.approx(1.0)
    assert 0.3 <= out["scores"]["int8"]["map50"] <= 1.0
    assert out["scores"]["fp16"]["map50"] >= 0.95


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_without_a_class_of_20_boxes_the_gate_scores_all_classes_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    scores = {"map50": 0.91, "map50_95": 0.8, "map50_min20": None, "map50_agnostic": 0.97}
    with caplog.at_level(logging.INFO, logger="lepton_edge.compile"):
        gate = gate_record("int8-cpu", scores, 0.95)
    assert gate["metric"] == "map50" and gate["score"] == 0.91 and gate["below_floor"] is True
    assert "int8-cpu: no class has 20 reference boxes; its gate score is the all-class mAP50" \
        in caplog.text
    assert "int8-cpu is below the floor: map50 0.910 < 0.95" in caplog.text
    assert gate_record("fp16", {**scores, "map50": 0.99}, 0.95)["below_floor"] is False
