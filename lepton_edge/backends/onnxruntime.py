"""ONNX Runtime backend: CPU everywhere; the CUDA and TensorRT execution providers where the
installed onnxruntime build has them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from lepton_edge.artifact import Artifact
from lepton_edge.backends.base import (
    BackendBase,
    BackendOptions,
    BackendSettings,
    Done,
    InferenceHandle,
    TensorSpec,
)
from lepton_edge.errors import BackendUnavailableError, ModelError

log = logging.getLogger(__name__)

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def available() -> tuple[bool, str]:
    return True, ""


class OnnxRuntimeOptions(BackendSettings):
    """`backend_options` of ONNX Runtime: none yet (threads and device are common settings)."""


class OnnxRuntimeBackend(BackendBase):
    """Runs the artifact's ONNX encoding for the requested precision with `InferenceSession`."""

    name = "onnxruntime"
    Options = OnnxRuntimeOptions

    def __init__(self, artifact: Artifact, options: BackendOptions) -> None:
        self.settings = options.settings_for(OnnxRuntimeOptions)
        self.artifact = artifact
        self.options = options
        self.precision = options.precision
        self.encoding, self.model_path = artifact.pick("onnxruntime", options.precision)
        self._session: Any = None
        self._input: TensorSpec | None = None
        self._output_names: list[str] = []

    def open(self) -> None:
        if self._session is not None:
            return
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailableError(f"onnxruntime cannot be imported ({err})") from err
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Spinning threads burn the core the capture thread needs to decode the next frame.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
                     if p in ort.get_available_providers() and self.options.device != "CPU"]
        providers.append("CPUExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(self.model_path), so, providers=providers)
        except Exception as err:  # ORT raises its own Fail/InvalidGraph/NoSuchFile types
            raise ModelError(_explain_load_error(self.model_path, err)) from err
        inp = self._session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else None for d in inp.shape)
        self._input = TensorSpec(inp.name, shape, np.dtype(_DTYPES.get(inp.type, np.float32)))
        self._output_names = [o.name for o in self._session.get_outputs()]
        log.info("onnxruntime %s: %s (%s) on %s", ort.__version__, self.model_path.name,
                 self.encoding, ",".join(self._session.get_providers()))

    def close(self) -> None:
        self._session = None

    def submit(self, batch: np.ndarray) -> InferenceHandle:
        if self._session is None:
            raise RuntimeError("backend is not open")
        outputs = self._session.run(self._output_names, {self.input.name: batch})
        return Done(outputs)


def _explain_load_error(path: Path, err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not path.exists():
        return f"{path}: model file not found"
    if path.stat().st_size == 0:
        return f"{path}: model file is empty"
    return f"{path}: ONNX Runtime cannot load this model ({text}); the file may be corrupt or " \
           f"not ONNX: re-copy it or rebuild the artifact"
