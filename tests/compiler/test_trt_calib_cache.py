from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from lepton_edge.compiler import trt_calib_cache as cc
from lepton_edge.errors import ModelError


def test_format_is_header_then_big_endian_hex_scales() -> None:
    text = cc.format_cache({"images": 1 / 127, "/model.0/conv/Conv_output_0": 0.5}, version=8601)
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1] == "images: " + struct.pack(">f", 1 / 127).hex()
    assert lines[2] == "/model.0/conv/Conv_output_0: 3f000000"


def test_text_parses_back_to_the_scales_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scales = {f"/model.{i}/act/Mul_output_0": float(s)
              for i, s in enumerate(rng.uniform(1e-4, 2.0, 50).astype(np.float32))}
    path = cc.write_cache(tmp_path / "calibration.cache", scales, version=8502)
    version, algorithm, parsed = cc.read_cache(path)
    assert (version, algorithm) == (8502, "EntropyCalibration2")
    assert parsed == scales  # float32 values survive exactly


def test_compiled_cache_matches_the_calibration_ranges(small_artifact: Path) -> None:
    import yaml

    manifest = yaml.safe_load((small_artifact / "manifest.yaml").read_text())
    _, _, parsed = cc.read_cache(small_artifact / "calibration.cache")
    assert "images" in parsed
    assert parsed["images"] == pytest.approx(1.0 / 127, rel=1e-6)  # the input spans 0..1
    assert len(parsed) > 100
    assert all(s > 0 for s in parsed.values())
    assert "calibration.cache" in manifest["files"]


@pytest.mark.parametrize(("text", "where"), [
    ("", "line 1"),
    ("TRT-8601\nx: 3f000000\n", "line 1"),
    ("TRT-8601-EntropyCalibration2\nx 3f000000\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\nx: 3f0000zz\n", "line 2"),
])
def test_malformed_cache_names_the_line(text: str, where: str) -> None:
    with pytest.raises(ModelError, match=where):
        cc.parse_cache(text)
