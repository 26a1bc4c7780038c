"""TensorRT + pycuda backend: plans from the engine cache, the CUDA letterbox, double buffering.

`open()` gets the plan for the artifact's encoding (`artifact.pick("tensorrt", precision)`:
`int8-device`, `fp16` or `fp32`, never a silent substitute) from the engine cache under
`options.state_dir`, with settings from `plan.plan_settings(input_size)` (what `compile --plan`
uses too), building it on first start, then creates two slots. A failed `open()` releases what
it made, so the next `open()` starts afresh. A slot is what one batch in flight needs: a CUDA
stream, a blocking-sync event, an execution context
(with its own optimization profile when the input is dynamic, as concurrent contexts require),
the engine's input and output bindings in device memory, page-locked host outputs, and the
frame buffers of `buffers.FrameInput`. Submitting alternates slots, so frame N+1 uploads and is
letterboxed on one stream while frame N infers on the other; only the detection outputs are
copied back. Buffers are allocated per slot, once per source shape and input shape.

tensorrt and pycuda are imported in `open()` and `available()`, never at module import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

from lepton_edge.artifact import Artifact
from lepton_edge.backends.base import (
    BackendBase,
    BackendOptions,
    BackendSettings,
    InferenceHandle,
    TensorSpec,
)
from lepton_edge.backends.tensorrt.plan import PlanSettings, plan_settings
from lepton_edge.backends.tensorrt.tensors import bind, numpy_dtype, output_shape, select_profile
from lepton_edge.errors import BackendUnavailableError, ModelError
from lepton_edge.pipeline.preprocess import LetterboxPlan

if TYPE_CHECKING:
    import tensorrt

    from lepton_edge.backends.tensorrt.cuda.buffers import Gpu
    from lepton_edge.backends.tensorrt.plan import TensorRtPlans

log = logging.getLogger(__name__)
T = TypeVar("T")

SLOTS = 2


class TensorRtOptions(BackendSettings):
    """`backend_options` of TensorRT."""

    # auto: mapped on integrated GPUs such as Jetson, else pinned
    host_memory: Literal["auto", "mapped", "pinned"] = "auto"


def available() -> tuple[bool, str]:
    """Whether this backend can run here: tensorrt and pycuda import and a CUDA device is
    present. Never raises; the reason says what is missing."""
    from lepton_edge.backends.tensorrt.cuda import cuda_available
    from lepton_edge.backends.tensorrt.plan import import_tensorrt

    try:
        tensorrt = import_tensorrt()
    except BackendUnavailableError as err:
        return False, str(err)
    try:
        import pycuda.driver  # noqa: F401  (not autoprimaryctx: probing starts no context)
    except Exception as err:
        return False, f"pycuda cannot be imported ({err}); pip install 'lepton-edge[pycuda]'"
    ok, why = cuda_available()
    if not ok:
        return False, f"tensorrt {tensorrt.__version__} is installed but {why}"
    return True, ""


@dataclass
class _Shaped:
    """A slot's buffers for one input shape."""

    shape: tuple[int, ...]
    input: Any  # device allocation of the engine input
    outputs: list[Any]  # device allocations
    host_outputs: list[np.ndarray]  # page-locked


@dataclass
class _Slot:
    index: int
    stream: Any
    done: Any  # event recorded after the last copy back
    context: tensorrt.IExecutionContext
    host_input: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    frames: dict[tuple[int, int], Any] = field(default_factory=dict)  # FrameInput per shape
    shaped: dict[tuple[int, ...], _Shaped] = field(default_factory=dict)
    current_shape: tuple[int, ...] | None = None
    generation: int = 0


class _Handle:
    """`wait()` syncs the slot's event and returns copies of its outputs; `read(fn)` lends the
    slot's host output buffers to `fn` instead (lepton_edge.backends.base.read_outputs)."""

    __slots__ = ("_backend", "_generation", "_shaped", "_slot")

    def __init__(self, backend: TensorRtBackend, slot: _Slot, shaped: _Shaped) -> None:
        self._backend, self._slot, self._shaped = backend, slot, shaped
        self._generation = slot.generation

    def wait(self) -> list[np.ndarray]:
        return self.read(lambda outs: [h.copy() for h in outs])

    def read(self, fn: Callable[[list[np.ndarray]], T]) -> T:
        if self._slot.generation != self._generation:
            raise RuntimeError("this batch's buffers were reused: wait() for a batch before "
                               f"submitting more than max_in_flight={SLOTS} after it")
        with self._backend.gpu.active():
            self._slot.done.synchronize()
        return fn(list(self._shaped.host_outputs))


class TensorRtBackend(BackendBase):
    """Runs the artifact's TensorRT encoding; letterboxes on the GPU via `submit_image`."""

    name = "tensorrt"
    Options = TensorRtOptions

    def __init__(self, artifact: Artifact, options: BackendOptions) -> None:
        self.settings = options.settings_for(TensorRtOptions)
        self.artifact = artifact
        self.options = options
        self.precision = options.precision
        self.encoding, self.model_path = artifact.pick("tensorrt", options.precision)
        self.gpu: Any = None  # a cuda.buffers.Gpu once started
        self.plan_path: Path | None = None
        self._engine: tensorrt.ICudaEngine | None = None
        self._plans: TensorRtPlans | None = None
        self._slots: list[_Slot] = []
        self._next = 0
        self._input: TensorSpec | None = None
        self._outputs: list[str] = []
        self._letterboxes: dict[LetterboxPlan, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def plan_settings(self) -> PlanSettings:
        """The settings of the plan this backend looks up (no I/O)."""
        return plan_settings(self.options.input_size, self.artifact.input.stride,
                             self.options.max_batch)

    def open(self) -> None:
        if self._engine is not None:
            return
        ok, why = available()
        if not ok:
            raise BackendUnavailableError(f"backend tensorrt: {why}")
        from lepton_edge.backends.tensorrt.cuda.buffers import Gpu
        from lepton_edge.backends.tensorrt.plan import TensorRtPlans, import_tensorrt

        trt = import_tensorrt()
        self.start(trt, Gpu.start(), TensorRtPlans.here())

    def start(self, trt: ModuleType, gpu: Gpu, plans: TensorRtPlans) -> None:
        """What `open()` does once TensorRT and the GPU are found: load (or build) the plan,
        describe its tensors, make the slots, load the kernel. On any failure everything made
        so far is released and the error raised: the backend is closed, not half open."""
        from lepton_edge.backends.tensorrt.cuda.buffers import compiled_kernel
        from lepton_edge.config import default_state_dir

        self.gpu, self._plans = gpu, plans
        try:
            with gpu.active():
                loaded = plans.load(self.model_path, self.options.state_dir or default_state_dir(),
                                    self.plan_settings())
                self._engine, self.plan_path = loaded.value, loaded.path
                self._describe(trt)
                self._make_slots()
                if self.input.dtype in (np.float32, np.float16):  # fail at start, not frame 1
                    compiled_kernel(gpu, "letterbox_f32" if self.input.dtype == np.float32
                                    else "letterbox_f16")
        except BaseException:
            self._release()
            raise
        log.info("tensorrt %s: %s (%s) on %s, plan %s", trt.__version__, self.model_path.name,
                 self.encoding, gpu.name, self.plan_path)

    def _describe(self, trt: ModuleType) -> None:
        engine: tensorrt.ICudaEngine = self._engine
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(name)
            else:
                outputs.append(name)
        if len(inputs) != 1:
            raise ModelError(f"{self.plan_path}: expected one image input, found {inputs}")
        name = inputs[0]
        shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
        dtype = numpy_dtype(trt, engine.get_tensor_dtype(name), name, self.plan_path)
        self._input = TensorSpec(name, shape, dtype)
        self._outputs = outputs
        self._out_dtypes = [numpy_dtype(trt, engine.get_tensor_dtype(o), o, self.plan_path)
                            for o in outputs]

    def _make_slots(self) -> None:
        drv = self.gpu.drv
        engine: tensorrt.ICudaEngine = self._engine
        dynamic = any(d is None for d in self.input.shape)
        profiles = engine.num_optimization_profiles
        slots = SLOTS if not dynamic or profiles >= SLOTS else 1
        if slots < SLOTS:
            log.warning("tensorrt: %s has %d optimization profile(s) for a dynamic input; "
                        "running one batch at a time (rebuild the plan for double buffering)",
                        self.plan_path, profiles)
        for i in range(slots):
            stream = drv.Stream()
            context: tensorrt.IExecutionContext | None = engine.create_execution_context()
            if context is None:
                raise BackendUnavailableError("tensorrt: cannot create an execution context "
                                              "(out of GPU memory?)")
            if dynamic and profiles > 1:
                select_profile(context, i, stream.handle, self.plan_path)
            self._slots.append(_Slot(i, stream, self.gpu.event(), context))

    def close(self) -> None:
        self._release()

    def _release(self) -> None:
        """Free every buffer made so far; safe at any point of a failed `start` and twice."""
        if self.gpu is not None:
            with self.gpu.active():
                for slot in self._slots:
                    slot.stream.synchronize()
                    for frame in slot.frames.values():
                        frame.free()
                    for shaped in slot.shaped.values():
                        for mem in [shaped.input, *shaped.outputs]:
                            mem.free()
        self._slots.clear()
        self._letterboxes.clear()
        self._engine = None
        self._input = None
        self._plans = None
        self._next = 0

    # ------------------------------------------------------------------ inference

    @property
    def max_in_flight(self) -> int:
        return max(1, len(self._slots))

    def submit(self, batch: np.ndarray) -> InferenceHandle:
        """Upload a prepared (N,3,H,W) tensor from the host and infer it."""
        slot = self._take_slot()
        batch = np.ascontiguousarray(batch, dtype=self.input.dtype)
        with self.gpu.active():
            slot.done.synchronize()
            shaped = self._shaped(slot, tuple(batch.shape))
            host = slot.host_input.get(batch.shape)
            if host is None:
                host = slot.host_input[batch.shape] = self.gpu.alloc_host(batch.shape,
                                                                          batch.dtype)
            np.copyto(host, batch)
            self.gpu.drv.memcpy_htod_async(shaped.input, host, slot.stream)
            return self._enqueue(slot, shaped)

    def submit_image(self, image: np.ndarray, plan: LetterboxPlan) -> InferenceHandle:
        """Letterbox `image` (uint8 BGR, HxWx3) on the GPU into the engine input and infer."""
        from lepton_edge.backends.tensorrt.cuda.buffers import CudaLetterbox, FrameInput

        slot = self._take_slot()
        with self.gpu.active():
            slot.done.synchronize()  # the slot's frame buffer and outputs are free again
            shaped = self._shaped(slot, (1, 3, plan.dst_h, plan.dst_w))
            kernel = self._letterboxes.get(plan)
            if kernel is None:
                kernel = self._letterboxes[plan] = CudaLetterbox(self.gpu, plan, self.input.dtype)
            frame = slot.frames.get((plan.src_h, plan.src_w))
            if frame is None:
                mode = self.settings.host_memory
                frame = slot.frames[(plan.src_h, plan.src_w)] = FrameInput(
                    self.gpu, (plan.src_h, plan.src_w, 3), mode)
            src = frame.load(np.ascontiguousarray(image), slot.stream)
            kernel.launch(src, frame.row_step, int(shaped.input), slot.stream)
            return self._enqueue(slot, shaped)

    def _take_slot(self) -> _Slot:
        if not self._slots:
            raise RuntimeError("backend is not open")
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        slot.generation += 1
        return slot

    def _shaped(self, slot: _Slot, shape: tuple[int, ...]) -> _Shaped:
        """The slot's buffers for input `shape`, allocated on first use; sets the context's
        input shape when it changes."""
        context: tensorrt.IExecutionContext = slot.context
        if slot.current_shape != shape:
            if not context.set_input_shape(self.input.name, shape):
                raise ModelError(f"{self.plan_path}: input shape {shape} is outside the plan's "
                                 f"profile; raise input_size/max_batch or rebuild the plan")
            slot.current_shape = shape
        shaped = slot.shaped.get(shape)
        if shaped is None:
            in_bytes = int(np.prod(shape)) * self.input.dtype.itemsize
            outs, hosts = [], []
            for name, dtype in zip(self._outputs, self._out_dtypes, strict=True):
                out_shape = output_shape(context, name, self.plan_path)
                hosts.append(self.gpu.alloc_host(out_shape, dtype))
                outs.append(self.gpu.alloc_device(hosts[-1].nbytes))
            shaped = slot.shaped[shape] = _Shaped(shape, self.gpu.alloc_device(in_bytes), outs,
                                                  hosts)
        return shaped

    def _enqueue(self, slot: _Slot, shaped: _Shaped) -> _Handle:
        context: tensorrt.IExecutionContext = slot.context
        bind(context, self.input.name, int(shaped.input), self.plan_path)
        for name, mem in zip(self._outputs, shaped.outputs, strict=True):
            bind(context, name, int(mem), self.plan_path)
        if not context.execute_async_v3(slot.stream.handle):
            raise ModelError(f"{self.plan_path}: TensorRT failed to enqueue inference "
                             f"(its log above says why)")
        for host, mem in zip(shaped.host_outputs, shaped.outputs, strict=True):
            self.gpu.drv.memcpy_dtoh_async(host, mem, slot.stream)
        slot.done.record(slot.stream)
        return _Handle(self, slot, shaped)
