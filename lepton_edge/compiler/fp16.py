"""The float16 model for TensorRT's `precision: fp16` (issue 14, item 4).

TensorRT 11 has no FP16 builder flag, and in 10.x a strongly typed network (what the plans
are) takes precision from the graph itself, so fp16 on TensorRT needs a float16 ONNX model.
`convert()` writes one with onnxconverter-common's float16 converter:

- weights and activations in float16, and the image input float16, so the CUDA letterbox
  writes half the bytes (`letterbox_f16`);
- the head tail (`keep_float`, by default YOLOv8's DFL box decode, the concats and the
  sigmoid) in float32: the box decode multiplies by the stride and sums distances, where fp16
  rounds boxes by a pixel and its softmax can overflow; the output therefore stays float32
  (a final cast to fp16 would only round the boxes again).

The gate scores it like the INT8 encodings (agreement with float on the held-out frames), run
by ONNX Runtime on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from onnx import TensorProto, helper

from lepton_edge.errors import CompileError

if TYPE_CHECKING:
    from lepton_edge.artifact import Artifact
    from lepton_edge.compiler import accuracy
    from lepton_edge.compiler.calibration import FrameSet

log = logging.getLogger("lepton_edge.compile")

FILE = "model.fp16.onnx"
ENCODING = "fp16-tail-fp32"


def write_and_score(out: Path, base: Artifact, frames: FrameSet,
                    reference: accuracy.Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write `out/model.fp16.onnx` from the artifact's float model and score it against the
    float detections on `frames` (the gate's held-out set), run by ONNX Runtime on the CPU.
    Returns (the manifest's model entry, its accuracy report)."""
    from lepton_edge.compiler import accuracy
    from lepton_edge.compiler.build import FILES, tail_nodes

    kept = tail_nodes(out / FILES["fp32"])
    convert(out / FILES["fp32"], out / FILE, kept)
    entry = {"file": FILE, "precision": "fp16", "encoding": ENCODING,
             "kept_in_float": "head tail"}
    art = dataclasses.replace(base, root=out, models={**base.models, "fp16": entry})
    run = accuracy.detect(art, frames, precision="fp16")
    s = accuracy.agreement(reference.detections, run.detections)
    log.info("compile: fp16 %.1f ms/frame on ONNX Runtime's CPU provider", run.ms_per_frame)
    report = {"map50": round(s.map50, 4), "map50_95": round(s.map50_95, 4), **s.restricted(),
              "frames": len(frames), "note": "run by ONNX Runtime on CPU; TensorRT consumes it"}
    return entry, report


def convert(src: Path, dst: Path, keep_float: list[str]) -> None:
    """Write the float16 model of `src` to `dst`, keeping the nodes named in `keep_float`
    (`build.tail_nodes`: the head tail) in float32."""
    try:
        from onnxconverter_common import float16
    except ImportError as err:
        raise CompileError("the fp16 model needs onnxconverter-common: pip install "
                           "'lepton-edge[compile]'") from err
    model = onnx.load(str(src))
    # Shapes inferred for float32 would contradict the converted types; the converter and
    # ONNX Runtime re-infer them.
    del model.graph.value_info[:]
    kept = list(keep_float)
    with _without_cast_cleanup(float16):
        model = float16.convert_float_to_float16(model, keep_io_types=True,
                                                 node_block_list=kept)
    _float16_inputs(model.graph)
    _float32_outputs(model.graph, set(kept))
    _join_float_tail(model.graph, set(kept))
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


@contextlib.contextmanager
def _without_cast_cleanup(float16: object) -> Iterator[None]:
    """onnxconverter-common (1.14-1.16) ends with `remove_unnecessary_cast_node`, which raises
    "The downstream node of the second cast node should be graph output" on YOLOv8 with a
    float32 tail. The back-to-back casts it would remove are fused by TensorRT anyway."""
    original = float16.remove_unnecessary_cast_node  # type: ignore[attr-defined]
    float16.remove_unnecessary_cast_node = lambda graph: None  # type: ignore[attr-defined]
    try:
        yield
    finally:
        float16.remove_unnecessary_cast_node = original  # type: ignore[attr-defined]


def _float16_inputs(graph: onnx.GraphProto) -> None:
    """Make float inputs float16 and drop the casts the converter put behind them."""
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        value.type.tensor_type.elem_type = TensorProto.FLOAT16
        casts = [n for n in graph.node if n.op_type == "Cast" and list(n.input) == [value.name]]
        for cast in casts:
            for node in graph.node:
                node.input[:] = [value.name if i == cast.output[0] else i for i in node.input]
            graph.node.remove(cast)


def _float32_outputs(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Make every float16 graph output float32 again. An output the float32 tail computes is
    taken straight from the tail (the converter routes it through fp32 -> fp16 casts, which
    would round the boxes); any other gets a cast to float32."""
    producers = {o: n for n in graph.node for o in n.output}
    for value in graph.output:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT16:
            continue
        value.type.tensor_type.elem_type = TensorProto.FLOAT
        last = producers[value.name]
        source, node = value.name, last
        while node is not None and node.op_type == "Cast":
            source = node.input[0]
            node = producers.get(source)
        if node is not None and node.name in kept and last.op_type == "Cast":
            last.input[0] = source  # float32 from the tail, cast float32 -> float32
            next(a for a in last.attribute if a.name == "to").i = TensorProto.FLOAT
            continue
        half = f"{value.name}_fp16"
        last.output[:] = [half if o == value.name else o for o in last.output]
        graph.node.append(helper.make_node("Cast", [half], [value.name], to=TensorProto.FLOAT,
                                           name=f"{value.name}_to_fp32"))
    _drop_dead_casts(graph)


def _join_float_tail(graph: onnx.GraphProto, kept: set[str]) -> None:
    """Between two float32 nodes the converter leaves a cast pair (float32 -> float16 ->
    float32), which rounds every tail value through fp16 (the pass that removes them is the one
    `_without_cast_cleanup` skips). Feed the second node the float32 tensor directly."""
    producers = {o: n for n in graph.node for o in n.output}
    bypass: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Cast" or _cast_to(node) != TensorProto.FLOAT:
            continue
        half = producers.get(node.input[0])
        if half is None or half.op_type != "Cast" or _cast_to(half) != TensorProto.FLOAT16:
            continue
        origin = producers.get(half.input[0])
        if origin is not None and origin.name in kept:
            bypass[node.output[0]] = half.input[0]
    for node in graph.node:
        node.input[:] = [bypass.get(i, i) for i in node.input]
    _drop_dead_casts(graph)


def _cast_to(node: onnx.NodeProto) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _drop_dead_casts(graph: onnx.GraphProto) -> None:
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def add_to_artifact(root: Path, calib: Path, frames: int | None = None) -> dict[str, Any]:
    """Add (or redo) the fp16 model of an existing artifact without recompiling the rest:
    write it, score it on the held-out frames of `calib` (the first `frames` of them, or
    all), and rewrite the manifest with its entry, report and sha256."""
    from lepton_edge.artifact import load_artifact, write_manifest
    from lepton_edge.compiler import accuracy
    from lepton_edge.compiler.calibration import FrameSet, load_frames

    art = load_artifact(root)
    held_out = load_frames(calib, size=art.input.default_size).evaluate
    held_out = held_out.with_input(art.input.default_size, art.input.fixed_hw, art.input.stride)
    if frames is not None and frames < len(held_out):  # an even sample across the sources
        step = len(held_out) / frames
        pick = [int(i * step) for i in range(frames)]
        held_out = FrameSet([held_out.frames[i] for i in pick],
                            [held_out.origins[i] for i in pick], held_out.size, held_out.fixed,
                            held_out.stride)
    reference = accuracy.detect(art, held_out, settings=accuracy.REFERENCE)
    entry, report = write_and_score(root, art, held_out, reference)
    manifest = dict(art.manifest)
    manifest["models"] = {**manifest["models"], "fp16": entry}
    manifest["precisions"] = sorted({m["precision"] for m in manifest["models"].values()})
    manifest["accuracy"] = {**manifest.get("accuracy", {}), "fp16": report}
    write_manifest(root, manifest)
    load_artifact(root)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lepton_edge.compiler.fp16",
                                     description="add the fp16 model to an existing artifact")
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--calib", type=Path, required=True,
                        help="the artifact's calibration spec (its evaluate section is scored)")
    parser.add_argument("--frames", type=int, default=None,
                        help="score only the first N held-out frames (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = add_to_artifact(args.artifact, args.calib, args.frames)
    print(f"fp16: mAP50 {report['map50']} mAP50-95 {report['map50_95']} on {report['frames']} "
          f"frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
