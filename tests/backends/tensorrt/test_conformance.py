"""API conformance with NVIDIA's real TensorRT bindings, no GPU and no libnvinfer (issue 14).

Each version's `tensorrt_bindings` wheel is imported in a subprocess over stub libraries
(scripts/trt_bindings.py, run by `make test`), and tests/support/trt_api.py checks every
TensorRT name the package's own source uses, found by walking it with `ast`: a new call is
covered without editing a list. Versions: 10.3 (JetPack 6.1/6.2), 10.13 and 11.4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import trt_bindings  # noqa: E402

VERSIONS = trt_bindings.VERSIONS


@cache
def check(version: str, root: Path = ROOT) -> dict[str, Any]:
    why = trt_bindings.prepare(version)
    if why is not None:
        pytest.skip(f"TensorRT {version} bindings unavailable: {why}")
    env = {**os.environ, "LD_LIBRARY_PATH": str(trt_bindings.stub_dir()),
           "PYTHONPATH": os.pathsep.join([str(trt_bindings.site_dir(version)), str(root)])}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "support" / "trt_api.py"),
                          str(root)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_the_package_uses_exists(version):
    result = check(version)
    assert result["version"] == version
    assert result["problems"] == []
    # The walk reaches the runner, the plan builder and the deserializer (a sanity floor, not
    # the list of names: that comes from the source).
    for name in ("IExecutionContext.execute_async_v3", "Runtime.deserialize_cuda_engine",
                 "Builder.build_serialized_network", "IExecutionContext.set_tensor_address",
                 "IBuilderConfig.set_timing_cache", "ICudaEngine.get_tensor_dtype"):
        assert name in result["checked"]
    assert len(result["checked"]) >= 50


@pytest.mark.parametrize("version", VERSIONS)
def test_strongly_typed_flag_and_dtypes_on_the_real_module(version):
    b = check(version)["behaviour"]
    assert b["network_flags"] == 1 << b["strongly_typed"]
    assert b["strongly_typed"] == (0 if version.startswith("11.") else 1)
    assert (b["FLOAT"], b["HALF"], b["INT8"], b["INT32"]) == ("float32", "float16", "int8",
                                                              "int32")
    for name in ("BF16", "FP8"):  # trt.nptype raises a bare TypeError for these
        assert b[name].startswith("ModelError:") and "numpy cannot hold" in b[name]


def _tree_with(tmp_path: Path, rel: str, old: str, new: str) -> Path:
    """A copy of the package with one edit, for showing that the check catches it."""
    import shutil

    shutil.copytree(ROOT / "lepton_edge", tmp_path / "lepton_edge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.ptx"))
    path = tmp_path / "lepton_edge" / rel
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return tmp_path


@pytest.mark.parametrize("rel, old, new, expect", [
    ("backends/tensorrt/runner.py", "context.execute_async_v3(", "context.execute_async_v4(",
     "IExecutionContext.execute_async_v4 does not exist"),
    ("backends/tensorrt/plan.py", "trt.MemoryPoolType.WORKSPACE", "trt.MemoryPoolType.WORKSPAC",
     "MemoryPoolType.WORKSPAC does not exist"),
    ("backends/tensorrt/plan.py",
     "        return engine\n",
     "        if engine is not None:\n            engine._lepton_runtime = self.runtime\n"
     "        return engine\n",
     "assigning ICudaEngine._lepton_runtime: ICudaEngine takes no new attributes"),
], ids=["misspelt-method", "misspelt-enum", "attribute-assignment"])
def test_the_check_catches_a_misspelling_and_the_attribute_assignment(tmp_path, rel, old, new,
                                                                      expect):
    result = check.__wrapped__(VERSIONS[0], _tree_with(tmp_path, rel, old, new))
    assert any(expect in p for p in result["problems"]), result["problems"]
