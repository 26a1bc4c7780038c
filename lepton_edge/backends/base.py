"""The backend protocol: what the pipeline needs from an inference runtime.

A backend is built cheaply (no I/O in the constructor), does its work between `open()` and
`close()` (also a context manager; `close()` is safe twice), and runs batches through
`submit()`, which returns a handle whose `wait()` gives the outputs. Synchronous runtimes
finish inside `submit()`; asynchronous ones (OpenVINO, TensorRT) keep up to `max_in_flight`
batches running, so the pipeline overlaps preparing frame N+1 with inferring frame N.

Settings only one backend reads (the config's `backend_options:`) are a typed model declared
in that backend's own module, `class Options(BackendSettings)`, named on the class as
`Options = ...` (Frigate's detector plugins: config and implementation side by side).
`lepton_edge.run.resolve_run` validates the config's mapping against it, so a wrong option is
reported with its file line before anything opens; the backend reads it with
`options.settings_for(ItsOptions)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from lepton_edge.errors import ConfigError
from lepton_edge.pipeline.preprocess import LetterboxPlan

T = TypeVar("T")


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (None where dynamic), numpy dtype, and for an image
    input its layout: "NCHW" (RGB scaled to 0..1, what the model itself takes) or "NHWC" (the
    letterboxed frame as captured, uint8 BGR; the backend normalizes it inside its graph)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype
    layout: str = "NCHW"

    @property
    def hw(self) -> tuple[int | None, int | None]:
        """Height and width of an image input (None where dynamic)."""
        if len(self.shape) != 4:
            raise ValueError(f"{self.name} is not an image input: shape {self.shape}")
        return (self.shape[1], self.shape[2]) if self.layout == "NHWC" else (self.shape[2],
                                                                             self.shape[3])

    @property
    def dynamic_hw(self) -> bool:
        return len(self.shape) == 4 and None in self.hw

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) of a static image input, None where H or W is dynamic."""
        h, w = self.hw if len(self.shape) == 4 else (None, None)
        return None if h is None or w is None else (h, w)


class BackendSettings(BaseModel):
    """Base of a backend's own options (`backend_options:`): frozen, unknown keys refused.
    Subclass it in the backend's module with typed, bounded fields and defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOptions(BackendSettings):
    """The options of a backend that reads none (and of a plugin that declares no `Options`)."""


S = TypeVar("S", bound=BackendSettings)


def options_model(backend_cls: type) -> type[BackendSettings]:
    """The typed options model a backend class declares (`Options = ...`), else `NoOptions`."""
    model = getattr(backend_cls, "Options", None)
    if isinstance(model, type) and issubclass(model, BackendSettings):
        return model
    return NoOptions


@dataclass(frozen=True)
class BackendOptions:
    """Settings every backend understands, and the chosen backend's own (`settings`)."""

    precision: str = "fp32"  # fp32 | fp16 | bf16 | int8
    threads: int = 0  # 0 = the runtime's default
    device: str = "CPU"  # OpenVINO device name; ignored elsewhere
    state_dir: Path | None = None  # caches (TensorRT plans, OpenVINO blobs)
    input_size: int = 640  # long side of the letterbox for dynamic-shape models
    max_batch: int = 1
    settings: BackendSettings | None = None  # the backend's own typed options; None: defaults

    def settings_for(self, model: type[S]) -> S:
        """This backend's own options: `settings` when it is a `model`, its defaults when unset.
        Options of another backend's model are a ConfigError (they were validated for it)."""
        if self.settings is None:
            return model()
        if not isinstance(self.settings, model):
            raise ConfigError(f"backend_options: {type(self.settings).__name__} given to a "
                              f"backend that reads {model.__name__}")
        return self.settings

    @property
    def extra(self) -> dict[str, str]:
        """The options explicitly set, as strings: for a backend still reading a plain mapping
        (with `check_options`); typed backends use `settings_for`."""
        if self.settings is None:
            return {}
        return {k: str(v) for k, v in self.settings.model_dump(exclude_unset=True).items()}


class InferenceHandle(Protocol):
    def wait(self) -> list[np.ndarray]:
        """Block until the batch is done; outputs are owned by the caller."""
        ...


def read_outputs(handle: InferenceHandle, fn: Callable[[list[np.ndarray]], T]) -> T:
    """`fn(outputs)` once the batch is done. A handle with `read(fn)` lends the runtime's own
    output buffers for the call (no copy: they are valid only inside `fn`, and the request is
    free for the next batch when it returns); any other handle gives the copies of `wait()`."""
    read = getattr(handle, "read", None)
    return read(fn) if read is not None else fn(handle.wait())


class Done:
    """Handle of a batch a synchronous backend already finished."""

    __slots__ = ("_outputs",)

    def __init__(self, outputs: list[np.ndarray]) -> None:
        self._outputs = outputs

    def wait(self) -> list[np.ndarray]:
        return self._outputs


@runtime_checkable
class Backend(Protocol):
    """An inference runtime behind one small interface."""

    name: str
    precision: str

    def open(self) -> None:
        """Load the model and allocate what inference needs. Raises ModelError or
        BackendUnavailableError with a message that says how to fix it."""
        ...

    def close(self) -> None:
        """Release everything; safe to call twice."""
        ...

    @property
    def input(self) -> TensorSpec: ...

    @property
    def max_in_flight(self) -> int:
        """How many batches `submit` may have running at once (1 for synchronous)."""
        ...

    def submit(self, batch: np.ndarray) -> InferenceHandle:
        """Start inference on `batch` of `input.dtype` in `input.layout`: (N,3,H,W), or
        (N,H,W,3) for NHWC (`preprocess.Letterbox` writes either). The caller must not write to
        `batch` until the handle's `wait()` returned."""
        ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class ImageInputBackend(Backend, Protocol):
    """A backend that letterboxes on its own device (the TensorRT CUDA kernel), taking the
    uint8 BGR frame itself instead of a prepared tensor."""

    def submit_image(self, image: np.ndarray, plan: LetterboxPlan) -> InferenceHandle: ...


def check_options(backend: str, extra: dict[str, str], known: dict[str, str]) -> None:
    """Refuse `backend_options` keys the backend does not read, listing the ones it does (for a
    backend without a typed `Options` model)."""
    unknown = sorted(set(extra) - set(known))
    if unknown:
        what = "; ".join(f"{k}: {v}" for k, v in known.items()) or "none"
        raise ConfigError(f"backend_options: {backend} does not know {', '.join(unknown)} "
                          f"(it reads: {what})")


class BackendBase:
    """Shared plumbing for implementations: context manager, the `input` spec once open, and
    one batch in flight by default. Not required by the protocol."""

    name = "base"
    precision = "fp32"
    _input: TensorSpec | None = None

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def input(self) -> TensorSpec:
        """The model input; known only once open (check protocols with isinstance after open)."""
        if self._input is None:
            raise RuntimeError(f"{self.name} backend is not open: call open() first")
        return self._input

    @property
    def max_in_flight(self) -> int:
        return 1
