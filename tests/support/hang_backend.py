"""A backend that hangs on demand: the real ONNX Runtime backend, except that `submit()` blocks
forever once the file named by `$LEPTON_TEST_HANG_FLAG` exists.

A test double for what the watchdog test is not about (the model): inference really runs until
the flag appears, then the inference thread blocks inside the backend the way a wedged GPU
driver or a deadlocked runtime would. On entering the block it writes `<flag>.hung` holding
`time.monotonic()` (CLOCK_MONOTONIC, the same clock in every process on the machine), so the
test can measure when the hang began. Config: `backend: "tests.support.hang_backend:HangBackend"`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from lepton_edge.artifact import Artifact
from lepton_edge.backends.base import BackendOptions, InferenceHandle, TensorSpec
from lepton_edge.backends.onnxruntime import OnnxRuntimeBackend

FLAG_ENV = "LEPTON_TEST_HANG_FLAG"


class HangBackend:
    """Delegates everything to an `OnnxRuntimeBackend`; only `submit()` can hang."""

    name = "hang-test"

    def __init__(self, artifact: Artifact, options: BackendOptions) -> None:
        flag = os.environ.get(FLAG_ENV)
        if not flag:
            raise RuntimeError(f"HangBackend needs ${FLAG_ENV}: the path whose existence makes "
                               f"submit() block")
        self.flag = Path(flag)
        self.inner = OnnxRuntimeBackend(artifact, options)
        self.precision = self.inner.precision
        self._never = threading.Event()

    def open(self) -> None:
        self.inner.open()

    def close(self) -> None:
        self.inner.close()

    @property
    def input(self) -> TensorSpec:
        return self.inner.input

    @property
    def max_in_flight(self) -> int:
        return self.inner.max_in_flight

    def submit(self, batch: np.ndarray) -> InferenceHandle:
        if self.flag.exists():
            Path(f"{self.flag}.hung").write_text(repr(time.monotonic()))
            self._never.wait()  # nothing ever sets it: the inference thread is stuck here
        return self.inner.submit(batch)

    def __enter__(self) -> HangBackend:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
