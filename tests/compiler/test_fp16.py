"""The float16 model TensorRT's `precision: fp16` runs: float16 weights and input, the YOLO
head tail and the output in float32, and its outputs on a real frame close to float's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from lepton_edge.artifact import load_artifact
from lepton_edge.compiler import fp16
from lepton_edge.compiler.build import tail_nodes
from lepton_edge.pipeline.preprocess import Letterbox, plan_letterbox
from tests.compiler.conftest import MODEL, SAMPLES

pytest.importorskip("onnxconverter_common", reason="the compile extra's onnxconverter-common")


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fp16") / fp16.FILE
    fp16.convert(MODEL, out, tail_nodes(MODEL))
    return out


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in values}


def test_weights_and_input_are_fp16_the_tail_and_output_fp32(converted: Path) -> None:
    model = onnx.load(str(converted))
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.dims]
    halves = sum(w.size for w in weights if w.dtype == np.float16)
    assert halves / sum(w.size for w in weights) > 0.95
    types = _types(model)
    tail = set(tail_nodes(MODEL))
    for node in model.graph.node:
        if node.name in tail and node.op_type in ("Softmax", "Sigmoid", "Mul", "Add", "Sub"):
            for name in node.output:
                assert types.get(name) != TensorProto.FLOAT16, node.name


def test_no_value_between_two_float32_tail_nodes_is_rounded_through_fp16(converted: Path) -> None:
    model = onnx.load(str(converted))
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Cast":
            continue
        up = producers.get(node.input[0])
        to = {a.name: a.i for a in node.attribute}["to"]
        if up is not None and up.op_type == "Cast":
            pair = ({a.name: a.i for a in up.attribute}["to"], to)
            assert pair != (TensorProto.FLOAT16, TensorProto.FLOAT), (up.name, node.name)


def test_outputs_on_a_real_frame_are_close_to_float(converted: Path) -> None:
    frame = cv2.imread(str(SAMPLES / "images" / "person.jpg"))
    plan = plan_letterbox(frame.shape[1], frame.shape[0], 640)
    box = Letterbox(plan)
    x = box.new_buffer()
    box(frame, x[0])
    ref = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    half = ort.InferenceSession(str(converted), providers=["CPUExecutionProvider"])
    want = ref.run(None, {"images": x})[0]
    got = half.run(None, {"images": x.astype(np.float16)})[0]
    assert got.dtype == np.float32 and got.shape == want.shape
    confident = want[0, 4:].max(axis=0) > 0.25
    assert confident.sum() > 10
    assert np.abs(got[0, :4, confident] - want[0, :4, confident]).max() < 2.0  # pixels
    scores = np.abs(got[0, 4:] - want[0, 4:])
    assert scores.max() < 0.04 and scores.mean() < 1e-3  # the fp16 backbone's rounding


def test_the_committed_artifact_carries_a_scored_fp16_model() -> None:
    art = load_artifact(MODEL.parent)  # verifies its sha256
    assert art.pick("tensorrt", "fp16")[1].name == fp16.FILE
    report = art.manifest["accuracy"]["fp16"]
    assert report["map50"] >= 0.99 and report["frames"] == art.manifest["accuracy"]["frames"]
