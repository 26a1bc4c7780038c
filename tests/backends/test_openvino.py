"""The OpenVINO backend against the real OpenVINO runtime and the bundled YOLOv8n artifact."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from lepton_edge.artifact import load_artifact
from lepton_edge.backends.base import Backend, BackendOptions, read_outputs
from lepton_edge.backends.onnxruntime import OnnxRuntimeOptions
from lepton_edge.errors import BackendUnavailableError, ConfigError, ModelError
from lepton_edge.pipeline.decode import DecodeSettings, decode_yolov8
from lepton_edge.pipeline.preprocess import letterbox

pytest.importorskip("openvino", reason="needs the openvino extra: pip install "
                                       "'lepton-edge[openvino]'")
from lepton_edge.backends import openvino as ov_backend
from lepton_edge.backends.openvino import OpenVinoBackend, OpenVinoOptions

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "engines" / "yolov8n"
IMAGES = REPO / "samples" / "images"
# Objects YOLOv8n finds at score >= 0.79 in the bundled photos (float, ONNX Runtime); the
# test asks for them at >= 0.5.
KNOWN = {"dog.jpg": {"dog", "bicycle"}, "eagle.jpg": {"bird"}, "giraffe.jpg": {"giraffe", "zebra"},
         "horses.jpg": {"horse"}, "kite.jpg": {"kite", "person"},
         "person.jpg": {"person", "dog", "horse"}}


@pytest.fixture(scope="module")
def artifact():
    return load_artifact(ARTIFACT)


def _input(backend: OpenVinoBackend, frame: np.ndarray):
    """The letterboxed batch in the layout the backend says it takes, and its plan."""
    return letterbox(frame, dtype=backend.input.dtype, layout=backend.input.layout)


def _labels(backend: OpenVinoBackend, artifact, name: str) -> set[str]:
    x, plan = _input(backend, cv2.imread(str(IMAGES / name)))
    out = backend.submit(x).wait()
    dets = decode_yolov8(out[0][0], plan, DecodeSettings(score=0.5))
    return {artifact.classes[c] for c in dets.class_id}


def test_available_says_why() -> None:
    ok, why = ov_backend.available()
    assert ok and "openvino" in why


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_float_precisions_detect_known_objects(artifact, precision: str, tmp_path: Path) -> None:
    if precision == "bf16" and "BF16" not in ov_backend.device_capabilities(
            __import__("openvino").Core(), "CPU"):
        pytest.skip("this CPU has no BF16 (the refusal is tested below)")
    backend = OpenVinoBackend(artifact, BackendOptions(precision=precision, state_dir=tmp_path))
    with backend:
        assert isinstance(backend, Backend)  # (before open(), 3.11's check reads `input`)
        assert backend.input.name == "images" and backend.input.dynamic_hw
        # the letterboxed frame as captured; the graph converts, reverses channels, scales
        assert backend.input.dtype == np.uint8 and backend.input.layout == "NHWC"
        assert backend.input.shape[1:] == (None, None, 3)
        hint = "f32" if precision == "fp32" else "bf16"
        for name, want in KNOWN.items():
            assert want <= _labels(backend, artifact, name), name
        compiled = next(iter(backend._compiled.values())).compiled
        assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == hint
    assert any((tmp_path / "openvino-cache").iterdir()), "CACHE_DIR is in the state directory"


def test_int8_falls_back_to_the_cpu_qdq_model_and_detects(artifact) -> None:
    """Without an int8-openvino encoding, int8 runs the ONNX Runtime Q/DQ model; an artifact
    with neither is refused naming the missing encodings. (The NNCF model itself is tested in
    tests/compiler/test_openvino_int8.py, through this backend.)"""
    if "int8-openvino" not in artifact.models and "int8-cpu" not in artifact.models:
        with pytest.raises(ModelError, match="int8-openvino, int8-cpu"):
            OpenVinoBackend(artifact, BackendOptions(precision="int8"))
        return
    with OpenVinoBackend(artifact, BackendOptions(precision="int8")) as backend:
        assert {"dog", "bicycle"} <= _labels(backend, artifact, "dog.jpg")


def test_bf16_refused_where_the_device_lacks_it(artifact, monkeypatch) -> None:
    """The refusal path, by the property the backend reads (this CPU has BF16)."""
    monkeypatch.setattr(ov_backend, "device_capabilities",
                        lambda core, device: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])
    backend = OpenVinoBackend(artifact, BackendOptions(precision="bf16"))
    with pytest.raises(BackendUnavailableError, match="OPTIMIZATION_CAPABILITIES") as err:
        backend.open()
    assert "does not support BF16" in str(err.value) and "fp32" in str(err.value)
    backend.close()
    backend.close()


def test_async_requests_in_flight_give_each_frame_its_own_outputs(artifact) -> None:
    """max_in_flight requests overlap; outputs are copies the caller owns, in submit order,
    equal to running each frame alone. Two shapes (two cameras) share the in-flight budget."""
    cap = cv2.VideoCapture(str(REPO / "samples" / "vtest.avi"))
    frames = [cap.read()[1] for _ in range(6)]
    bikes = cv2.VideoCapture(str(REPO / "samples" / "bikes.mp4")).read()[1]
    with OpenVinoBackend(artifact, BackendOptions(precision="fp32")) as backend:
        inputs = [_input(backend, f)[0] for f in [*frames[:3], bikes, *frames[3:]]]
        n = backend.max_in_flight
        assert n >= 1
        alone = [backend.submit(x).wait()[0] for x in inputs]
        pending, got = [], []
        for x in inputs:
            if len(pending) == n:
                got.append(pending.pop(0).wait()[0])
            pending.append(backend.submit(x))
        got += [h.wait()[0] for h in pending]
        # one compiled model per letterbox shape, keyed by the NHWC batch shape
        assert {(1, 512, 640, 3), (1, 288, 640, 3)} <= set(backend._compiled)
        first = got[0].copy()
        backend.submit(inputs[1]).wait()  # reusing a request must not touch returned arrays
        np.testing.assert_array_equal(got[0], first)
        # a caller that overruns max_in_flight still gets every batch's own outputs
        overrun = [backend.submit(x) for x in inputs[: n + 1]]
        for h, a in zip(reversed(overrun), reversed(alone[: n + 1]), strict=True):
            np.testing.assert_allclose(h.wait()[0], a, rtol=0, atol=1e-3)
    assert [g.shape for g in got] == [a.shape for a in alone]
    assert got[3].shape[2] != got[0].shape[2]  # 640x288 has fewer anchors than 640x512
    for g, a in zip(got, alone, strict=True):
        np.testing.assert_allclose(g, a, rtol=0, atol=1e-3)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_pixel_input_computes_what_the_float_tensor_does(artifact, precision: str) -> None:
    """The uint8 BGR input normalized in OpenVINO's graph gives the outputs of the float NCHW
    tensor normalized in Python (`backend_options: {input: tensor}`), frame by frame."""
    cap = cv2.VideoCapture(str(REPO / "samples" / "vtest.avi"))
    frames = [cap.read()[1] for _ in range(3)]
    tensor_opts = BackendOptions(precision=precision, settings=OpenVinoOptions(input="tensor"))
    with OpenVinoBackend(artifact, tensor_opts) as floats, \
            OpenVinoBackend(artifact, BackendOptions(precision=precision)) as pixels:
        assert floats.input.layout == "NCHW" and floats.input.dtype == np.float32
        assert pixels.input.layout == "NHWC" and pixels.input.dtype == np.uint8
        for frame in frames:
            want = floats.submit(_input(floats, frame)[0]).wait()[0]
            got = pixels.submit(_input(pixels, frame)[0]).wait()[0]
            assert got.shape == want.shape
            if precision == "fp32":
                # boxes in input pixels (0..640) and sigmoid scores: equal up to float rounding
                np.testing.assert_allclose(got, want, rtol=0, atol=0.05)
                assert np.abs(got[0, 4:] - want[0, 4:]).max() < 2e-3
                continue
            # INT8: its float parts (the stem's three convs, the head tail) run in the CPU's
            # bf16 where it has it, and the two input paths round differently there; the
            # confident candidates agree within 1.5 px and 0.2 of a score
            # (measured: 0.9 px, 0.12)
            conf = want[0, 4:].max(axis=0) >= 0.25
            assert conf.sum() > 20
            assert np.abs(got[0, :4, conf] - want[0, :4, conf]).max() < 1.5
            assert np.abs(got[0, 4:, conf] - want[0, 4:, conf]).max() < 0.2


def test_read_lends_the_request_outputs_once(artifact) -> None:
    """`read_outputs` decodes from the request's own tensors (what the pipeline's inferring
    stage does): the same values `wait()` copies, the request free afterwards, and a second
    read of that batch refused instead of returning the next batch's numbers."""
    with OpenVinoBackend(artifact, BackendOptions(precision="fp32")) as backend:
        frame = cv2.imread(str(IMAGES / "dog.jpg"))
        x, _ = _input(backend, frame)
        copied = backend.submit(x).wait()[0]
        handle = backend.submit(x)
        lent = read_outputs(handle, lambda outs: (outs[0].copy(), outs[0].flags.owndata))
        np.testing.assert_array_equal(lent[0], copied)
        assert not lent[1]  # a view of OpenVINO's tensor, not a copy
        with pytest.raises(RuntimeError, match="already read"):
            handle.wait()
        # a batch whose request was needed again before it was read keeps a copy
        first = backend.submit(x)
        for _ in range(backend.max_in_flight):
            backend.submit(x).wait()
        np.testing.assert_array_equal(read_outputs(first, lambda outs: outs[0]), copied)


def test_pixel_input_refuses_a_float_batch(artifact) -> None:
    """A batch in the wrong layout is refused with the shapes, not run."""
    with OpenVinoBackend(artifact, BackendOptions(precision="fp32")) as backend:
        x, _ = letterbox(cv2.imread(str(IMAGES / "dog.jpg")))  # (1,3,H,W) float32
        with pytest.raises(ValueError, match=r"the model takes \?x\?x\?x3 \(uint8 NHWC"):
            backend.submit(x)


def test_latency_hint_keeps_one_request(artifact) -> None:
    opts = BackendOptions(precision="fp32", settings=OpenVinoOptions(hint="latency"))
    with OpenVinoBackend(artifact, opts) as backend:
        assert backend.max_in_flight == 1


@pytest.mark.parametrize(("pinning", "expected"), [(None, False), (True, True)])
def test_streams_are_unpinned_unless_asked(artifact, pinning, expected: bool) -> None:
    """The compiled model itself reports the pinning (OpenVINO pins under the throughput hint
    by default; the backend turns that off so the daemon's threads do not stall a stream)."""
    settings = OpenVinoOptions() if pinning is None else OpenVinoOptions(pinning=pinning)
    with OpenVinoBackend(artifact, BackendOptions(precision="fp32", settings=settings)) as b:
        assert b.max_in_flight >= 1  # compiles the default shape
        compiled = next(iter(b._compiled.values())).compiled
        assert compiled.get_property("ENABLE_CPU_PINNING") is expected


@pytest.mark.parametrize(("options", "match"), [
    (BackendOptions(precision="int4"), "precision: openvino runs"),
    (BackendOptions(settings=OnnxRuntimeOptions()),
     "backend_options: OnnxRuntimeOptions given to a backend that reads OpenVinoOptions"),
])
def test_bad_options_are_config_errors(artifact, options, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OpenVinoBackend(artifact, options)


@pytest.mark.parametrize(("fields", "match"), [
    ({"streams": 2}, "Extra inputs are not permitted"),
    ({"hint": "fast"}, "Input should be 'throughput' or 'latency'"),
    ({"requests": 0}, "greater than or equal to 1"),
    ({"input": "nv12"}, "Input should be 'pixels' or 'tensor'"),
])
def test_the_options_model_refuses_what_the_backend_cannot_do(fields: dict, match: str) -> None:
    """Typed in the backend's module; `resolve_run` turns these into file:line errors
    (tests/test_run.py)."""
    with pytest.raises(ValidationError, match=match):
        OpenVinoOptions(**fields)
    assert OpenVinoOptions(hint="LATENCY", requests="2").hint == "latency"


def test_missing_device_says_what_is_there(artifact) -> None:
    backend = OpenVinoBackend(artifact, BackendOptions(device="NPU"))
    if "NPU" in __import__("openvino").Core().available_devices:
        pytest.skip("this machine has an NPU")
    with pytest.raises(BackendUnavailableError, match=r"no .NPU. here .*sees CPU"):
        backend.open()


def test_constructor_does_no_io(tmp_path: Path) -> None:
    """Building the backend on an artifact whose model file is gone succeeds; open() says
    which file is missing."""
    (tmp_path / "model.onnx").write_bytes((ARTIFACT / "model.onnx").read_bytes())
    art = load_artifact(tmp_path / "model.onnx")
    (tmp_path / "model.onnx").unlink()
    backend = OpenVinoBackend(art, BackendOptions())
    with pytest.raises(ModelError, match="model file not found"):
        backend.open()


@pytest.mark.parametrize(("flags", "want"), [
    ("fpu sse2 avx2 avx512f avx512_vnni", True),
    ("fpu sse2 avx2 avx_vnni", True),
    ("fpu sse2 avx2 amx_int8 amx_tile", True),
    ("fpu sse2 avx2 avx512f avx512bw", False),  # AVX-512 without VNNI (Skylake-SP)
    (None, None),  # no flags line: not told
])
def test_vnni_is_read_from_the_cpu_flags(flags, want) -> None:
    text = "processor\t: 0\n" + (f"flags\t\t: {flags}\n" if flags else "Features\t: neon\n")
    assert ov_backend.x86_has_vnni(text) is want


def test_full_range_int8_weights_warn_on_a_cpu_without_vnni(artifact, monkeypatch,
                                                            caplog) -> None:
    """The compiler records overflow_fix; a CPU without VNNI gets one warning saying how to
    rebuild, and the model still runs."""
    if "int8-openvino" not in artifact.models:
        pytest.skip("artifact without an int8-openvino encoding")
    entry = {**artifact.models["int8-openvino"], "overflow_fix": "disable"}
    art = __import__("dataclasses").replace(
        artifact, models={**artifact.models, "int8-openvino": entry})
    monkeypatch.setattr(ov_backend, "x86_has_vnni", lambda: False)
    with caplog.at_level("WARNING", logger="lepton_edge.backends.openvino"), \
            OpenVinoBackend(art, BackendOptions(precision="int8")) as backend:
        assert {"dog", "bicycle"} <= _labels(backend, art, "dog.jpg")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "--openvino-overflow-fix first_layer_only" in warnings[0]
    monkeypatch.setattr(ov_backend, "x86_has_vnni", lambda: True)
    caplog.clear()
    with OpenVinoBackend(art, BackendOptions(precision="int8")):
        pass
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
