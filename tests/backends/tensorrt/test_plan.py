"""Plans: clear refusals where TensorRT or a GPU is missing (any CPU machine), one settings
function for the daemon and `compile --plan` at every input size, the version floor, per-key
timing caches, and a real build where TensorRT and a GPU are present (marked gpu)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton_edge.backends.tensorrt import plan
from lepton_edge.backends.tensorrt.engine_cache import PlanKey
from lepton_edge.backends.tensorrt.plan import (
    PlanSettings,
    available,
    build_plan,
    plan_settings,
    require_version,
    timing_cache_path,
)
from lepton_edge.errors import BackendUnavailableError, CompileError
from tests.support.imports import gpu_modules_imported_by

ROOT = Path(__file__).resolve().parents[3]
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
        build_plan(MODEL, tmp_path, plan_settings(640))
    assert "tensorrt" in str(err.value).lower() or "GPU" in str(err.value)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


def test_importing_the_plan_modules_imports_no_tensorrt():
    assert gpu_modules_imported_by("lepton_edge.backends.tensorrt.plan",
                                   "lepton_edge.backends.tensorrt.engine_cache",
                                   "lepton_edge.compiler.build") == []


def test_nothing_under_backends_imports_the_compiler():
    import ast

    offenders = []
    for path in (ROOT / "lepton_edge" / "backends").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if "compiler" in n]
    assert offenders == []


@pytest.mark.parametrize("kwargs, message", [
    ({"opt_hw": (700, 640)}, "min <= opt <= max"),
    ({"min_hw": (64, 64), "opt_hw": (32, 640)}, "min <= opt <= max"),
    ({"max_batch": 0}, "positive"),
    ({"workspace_mib": 0}, "positive"),
])
def test_settings_refuse_inconsistent_shapes(kwargs, message):
    with pytest.raises(CompileError, match=message):
        PlanSettings(**kwargs)


@pytest.mark.parametrize("size, opt, top", [
    (640, (512, 640), (640, 640)),
    (512, (416, 512), (512, 512)),
    (320, (256, 320), (320, 320)),
    (32, (64, 32), (64, 32)),  # 4:3 at 32 letterboxes to 32x64 (stride padding)
    (1280, (992, 1280), (1280, 1280)),
])
def test_plan_settings_follow_the_input_size(size, opt, top):
    s = plan_settings(size, stride=32)
    assert (s.opt_hw, s.max_hw) == (opt, top)
    assert s.min_hw[0] <= s.opt_hw[0]


def test_settings_are_plain_key_values():
    key = plan_settings(640, max_batch=2).as_key()
    assert key == {"max_batch": 2, "min_hw": [32, 32], "opt_hw": [512, 640],
                   "max_hw": [640, 640], "workspace_mib": 1024, "profiles": 2}


@pytest.mark.parametrize("version, ok", [
    ("8.6.1", False), ("8.6.2.3", False), ("10.0.1", True), ("10.3.0", True),
    ("11.4.0.106", True), ("garbage", False),
])
def test_tensorrt_older_than_10_is_refused_with_the_jetpack_to_use(version, ok):
    if ok:
        require_version(version)
        return
    with pytest.raises(BackendUnavailableError, match=r"needs TensorRT >= 10 \(JetPack 6.1"):
        require_version(version)


def test_an_old_tensorrt_on_the_path_makes_the_backend_unavailable(tmp_path):
    """JetPack 6.0's TensorRT 8.6 imports; the backend must say it is too old, not fail later
    with a parse error. A package named tensorrt with 8.6's version stands in for it."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text('__version__ = "8.6.2"\n')
    code = ("from lepton_edge.backends.tensorrt import available\n"
            "from lepton_edge.backends.tensorrt import plan\n"
            "print(available()[1]); print(plan.available()[1])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": os.pathsep.join(
                             [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]),
                              "PATH": "/usr/bin:/bin"},
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and all("TensorRT 8.6.2 is too old" in line for line in lines)


def _key(**settings: object) -> PlanKey:
    return PlanKey(onnx_sha256="a" * 64, settings=settings, recipe=plan.BUILD_RECIPE,
                   tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")


def test_each_plan_has_its_own_timing_cache(tmp_path):
    """Two builds of different plans (in one process or two at once) never share one timing
    cache file; a rebuild of the same plan reuses its own."""
    a, b = _key(max_hw=[640, 640]), _key(max_hw=[512, 512])
    assert timing_cache_path(tmp_path, a) != timing_cache_path(tmp_path, b)
    assert timing_cache_path(tmp_path, a) == timing_cache_path(tmp_path, _key(max_hw=[640, 640]))
    assert timing_cache_path(tmp_path, a).parent == tmp_path


@pytest.mark.gpu
def test_real_plan_is_built_once_then_cached_and_truncation_rebuilds(tmp_path):
    ok, why = available()
    if not ok:
        pytest.skip(why)
    settings = plan_settings(640)
    path = build_plan(MODEL, tmp_path, settings).path
    assert path.parent == tmp_path / "engines" and path.stat().st_size > 1_000_000
    assert list(tmp_path.glob("engines/*.timing")), "the timing cache was not persisted"
    mtime = path.stat().st_mtime_ns
    again = build_plan(MODEL, tmp_path, settings)
    assert again.path == path and not again.built and path.stat().st_mtime_ns == mtime
    path.write_bytes(path.read_bytes()[:1000])
    rebuilt = build_plan(MODEL, tmp_path, settings)
    assert rebuilt.built and path.stat().st_size > 1_000_000
