"""Fixtures: a small calibration spec over the bundled samples, and one artifact compiled from
it (module-independent, compiled once per session so `make test` stays fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lepton_edge.compiler.build import CompileOptions, compile_model
from lepton_edge.compiler.quantize import QuantSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = REPO_ROOT / "engines" / "yolov8n" / "model.onnx"
SAMPLES = REPO_ROOT / "samples"

SMALL_SPEC = """\
size: 640
calibrate:
  - {{video: {samples}/vtest.avi, start: 0, stop: 90, stride: 10}}
  - {{video: {samples}/bikes.mp4, start: 0, stop: 100, stride: 25}}
  - {{images: {samples}/images}}
evaluate:
  - {{video: {samples}/vtest.avi, start: 400, stop: 794, stride: 25}}
  - {{video: {samples}/bikes.mp4, start: 125, stop: 249, stride: 20}}
"""


@pytest.fixture(scope="session")
def small_spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 calibration frames (vtest, bikes, photos) and 23 held-out frames."""
    path = tmp_path_factory.mktemp("calib") / "small.yaml"
    path.write_text(SMALL_SPEC.format(samples=SAMPLES.as_posix()))
    return path


def small_options(spec: Path, out: Path, **changes: object) -> CompileOptions:
    opts = CompileOptions(model=MODEL, calib=spec, name="tiny", out_root=out,
                          quant=QuantSettings(method="minmax"), floor=0.3, max_float_steps=0,
                          openvino=False, progress=False)
    return CompileOptions(**{**opts.__dict__, **changes})


@pytest.fixture(scope="session")
def small_artifact(small_spec: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model compiled on the small spec (the floor lowered: 20 frames of
    calibration are not enough for 0.95; the committed artifact shows what a full set does)."""
    return compile_model(small_options(small_spec, tmp_path_factory.mktemp("engines")))
