"""NNCF quantization of the bundled YOLOv8n into the `int8-openvino` encoding, loaded back
through the OpenVINO backend (small and fast: 8 frames, fast bias correction)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from lepton_edge.artifact import MANIFEST, load_artifact, write_manifest
from lepton_edge.backends.base import BackendOptions
from lepton_edge.errors import CompileError
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8
from lepton_edge.pipeline.preprocess import letterbox

pytest.importorskip("nncf", reason="needs the openvino extra: pip install 'lepton-edge[openvino]'")
from lepton_edge.backends.openvino import OpenVinoBackend
from lepton_edge.compiler.accuracy import as_input
from lepton_edge.compiler.openvino_int8 import available, quantize_openvino

REPO = Path(__file__).resolve().parents[2]
FLOAT_ONNX = REPO / "engines" / "yolov8n" / "model.onnx"


def _calibration(n: int) -> list[np.ndarray]:
    """n frames of vtest.avi (640x512 letterbox) and one of bikes.mp4 (640x288, left out)."""
    cap = cv2.VideoCapture(str(REPO / "samples" / "vtest.avi"))
    frames = []
    for i in range(n * 10):
        ok, frame = cap.read()
        assert ok, "samples/vtest.avi is unreadable"
        if i % 10 == 0:
            frames.append(letterbox(frame)[0])
    bikes = cv2.VideoCapture(str(REPO / "samples" / "bikes.mp4")).read()[1]
    return [*frames, letterbox(bikes)[0]]


def test_quantized_model_loads_through_the_backend_and_finds_the_dog(tmp_path: Path) -> None:
    assert available()[0]
    shutil.copy(FLOAT_ONNX, tmp_path / "model.onnx")
    files = quantize_openvino(tmp_path / "model.onnx", _calibration(8), tmp_path,
                              subset_size=8, fast_bias_correction=True)
    assert files == ["openvino-int8/model.xml", "openvino-int8/model.bin"]
    assert all((tmp_path / f).stat().st_size > 0 for f in files)

    manifest = yaml.safe_load((REPO / "engines" / "yolov8n" / MANIFEST).read_text())
    manifest["models"] = {
        "fp32": {"file": "model.onnx", "precision": "fp32"},
        "int8-openvino": {"file": files[0], "precision": "int8", "extra_files": files[1:]},
    }
    write_manifest(tmp_path, manifest)
    art = load_artifact(tmp_path)
    with OpenVinoBackend(art, BackendOptions(precision="int8")) as backend:
        assert backend.encoding == "int8-openvino"
        x, plan = letterbox(cv2.imread(str(REPO / "samples" / "images" / "dog.jpg")))
        dets = decode_yolov8(backend.submit(as_input(x, backend.input)).wait()[0][0], plan,
                             DecodeSettings(score=0.5))
        found = {art.classes[c] for c in dets.class_id}
        assert {"dog", "bicycle"} <= found
        # the quantized IR keeps dynamic H and W: one file serves every letterbox shape
        assert backend.input.dynamic_hw
        bikes = cv2.VideoCapture(str(REPO / "samples" / "bikes.mp4")).read()[1]
        batch = as_input(letterbox(bikes)[0], backend.input)  # the layout the backend takes
        assert backend.submit(batch).wait()[0].shape == (1, 84, 3780)


@pytest.mark.parametrize(("calibration", "match"), [
    ([], "calibration set is empty"),
    ([np.zeros((3, 64, 64), np.float32)], r"frame 0 is float32 \(3, 64, 64\)"),
    ([np.zeros((1, 3, 64, 64), np.uint8)], "frame 0 is uint8"),
])
def test_bad_calibration_is_refused(tmp_path: Path, calibration, match: str) -> None:
    with pytest.raises(CompileError, match=match):
        quantize_openvino(FLOAT_ONNX, calibration, tmp_path)


def test_ignored_pattern_that_matches_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="no node matches"):
        quantize_openvino(FLOAT_ONNX, _calibration(1), tmp_path,
                          ignored_patterns=[r"/model\.99/"])


def test_default_recipe_feeds_every_shape_with_full_range_weights(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """The measured default (module docstring): every calibration frame at its own letterbox
    shape, and NNCF's overflow fix off; `one_shape=True` keeps the old frame choice."""
    import nncf

    seen: list[dict] = []

    def fake_quantize(model, dataset, **kwargs):
        shapes = {tuple(next(iter(x.values())).shape) for x in dataset.get_inference_data()}
        seen.append({"shapes": shapes, **kwargs})
        return model  # the float model: enough to check what was passed

    monkeypatch.setattr(nncf, "quantize", fake_quantize)
    frames = _calibration(2)  # two 640x512 frames and one 640x288
    quantize_openvino(FLOAT_ONNX, frames, tmp_path)
    quantize_openvino(FLOAT_ONNX, frames, tmp_path, one_shape=True,
                      overflow_fix="first_layer_only")
    assert seen[0]["shapes"] == {(1, 3, 512, 640), (1, 3, 288, 640)}
    assert seen[0]["subset_size"] == 3
    assert seen[0]["advanced_parameters"].overflow_fix == nncf.OverflowFix.DISABLE
    assert seen[1]["shapes"] == {(1, 3, 512, 640)}
    assert seen[1]["subset_size"] == 2
    assert seen[1]["advanced_parameters"].overflow_fix == nncf.OverflowFix.FIRST_LAYER


def test_unknown_overflow_fix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="overflow_fix 'off'"):
        quantize_openvino(FLOAT_ONNX, _calibration(1), tmp_path, overflow_fix="off")


def test_the_committed_encoding_keeps_the_stem_and_quantizes_the_rest() -> None:
    # the first three convs (they see the image) stay float, as in the TensorRT encoding:
    # no FakeQuantize on their input; the conv after them reads a quantized activation
    import openvino as ov

    from lepton_edge.compiler.openvino_int8 import module_pattern

    assert module_pattern("/model.2/cv1/conv/Conv") == r"^/model\.2/cv1/"
    model = ov.Core().read_model(str(REPO / "engines" / "yolov8n" / "openvino-int8" /
                                     "model.xml"))
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    fed = [op.input_value(0).get_node().get_type_name() for op in convs]
    names = [op.get_friendly_name() for op in convs]
    assert names[:3] == ["/model.0/conv/Conv/WithoutBiases", "/model.1/conv/Conv/WithoutBiases",
                         "/model.2/cv1/conv/Conv/WithoutBiases"]
    assert "FakeQuantize" not in fed[:3]
    assert fed.count("FakeQuantize") >= len(convs) // 2  # the body is quantized
