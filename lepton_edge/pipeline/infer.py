"""Inferring: submit prepared frames to the backend, up to `max_in_flight` at once, and complete
them in submission order, so each camera's frames stay in order."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import numpy as np

from lepton_edge.backends.base import Backend
from lepton_edge.pipeline.prepare import Job


class Inferrer:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._pending: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        job.t_submit = time.perf_counter()
        if job.tensor is None:
            job.handle = self._backend.submit_image(  # type: ignore[attr-defined]
                job.pixels, job.plan)
        else:
            job.handle = self._backend.submit(job.tensor)
        self._pending.append(job)

    @property
    def full(self) -> bool:
        return len(self._pending) >= self._backend.max_in_flight

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def complete_one(self, deliver: Callable[[Job], None]) -> None:
        """Wait for the oldest batch and hand its job (output set) to `deliver`."""
        job = self._pending.popleft()
        outputs: list[np.ndarray] = job.handle.wait()  # type: ignore[attr-defined]
        job.handle = None
        job.timings["infer"] = (time.perf_counter() - job.t_submit) * 1000.0
        job.output = outputs[0][0]  # batch of one: (4 + C, N)
        deliver(job)
