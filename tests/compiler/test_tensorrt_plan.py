"""The TensorRT plan builder: clear refusals where TensorRT or a GPU is missing (runs on any
CPU machine), settings validation, and a real build where both are present (marked gpu)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lepton_edge.compiler import tensorrt_plan
from lepton_edge.compiler.tensorrt_plan import PlanSettings, available, build_plan
from lepton_edge.errors import BackendUnavailableError, CompileError

from ..support.imports import gpu_modules_imported_by

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "engines" / "yolov8n" / "model.onnx"
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def test_available_says_why_not_and_never_raises():
    ok, why = available()
    assert isinstance(ok, bool) and why
    if not HAVE_TRT:
        assert not ok
        assert "tensorrt cannot be imported" in why and "lepton-edge[tensorrt]" in why


@pytest.mark.skipif(available()[0], reason="TensorRT and a GPU are present here")
def test_build_plan_without_tensorrt_or_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="onnxruntime") as err:
        build_plan(MODEL, tmp_path)
    assert "tensorrt" in str(err.value).lower() or "GPU" in str(err.value)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_importing_the_builder_imports_no_tensorrt():
    assert gpu_modules_imported_by("lepton_edge.compiler.tensorrt_plan",
                                   "lepton_edge.engine_cache") == []


@pytest.mark.parametrize("kwargs, message", [
    ({"opt_hw": (700, 640)}, "min <= opt <= max"),
    ({"min_hw": (64, 64), "opt_hw": (32, 640)}, "min <= opt <= max"),
    ({"max_batch": 0}, "positive"),
    ({"workspace_mib": 0}, "positive"),
])
def test_settings_refuse_inconsistent_shapes(kwargs, message):
    with pytest.raises(CompileError, match=message):
        PlanSettings(**kwargs)


def test_settings_are_plain_key_values():
    key = PlanSettings(max_batch=2).as_key()
    assert key == {"max_batch": 2, "min_hw": [32, 32], "opt_hw": [512, 640],
                   "max_hw": [640, 640], "workspace_mib": 1024, "profiles": 2}


@pytest.mark.gpu
def test_real_plan_is_built_once_then_cached_and_truncation_rebuilds(tmp_path):
    ok, why = available()
    if not ok:
        pytest.skip(why)
    path = build_plan(MODEL, tmp_path, opt_hw=(512, 640), max_hw=(640, 640))
    assert path.parent == tmp_path / "engines" and path.stat().st_size > 1_000_000
    assert list(tmp_path.glob("engines/timing-*.cache")), "the timing cache was not persisted"
    mtime = path.stat().st_mtime_ns
    assert build_plan(MODEL, tmp_path) == path and path.stat().st_mtime_ns == mtime
    path.write_bytes(path.read_bytes()[:1000])
    assert build_plan(MODEL, tmp_path) == path and path.stat().st_size > 1_000_000
    _, loaded = tensorrt_plan.load_engine(MODEL, tmp_path, PlanSettings())
    assert loaded == path
