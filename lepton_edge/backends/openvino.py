"""OpenVINO backend: x86 boxes without an NVIDIA GPU (CPU, Intel iGPU, NPU, AUTO).

Runs the artifact's float model (`fp32` with the f32 inference hint, `bf16` where the device
reports BF16, `fp16` where it reports FP16) or its OpenVINO INT8 model (`int8-openvino`, NNCF;
else the ONNX Runtime Q/DQ model `int8-cpu`). Inference is asynchronous: under the THROUGHPUT
hint OpenVINO says how many requests keep the device busy (`max_in_flight`, 2 on a 2-core CPU),
and `submit()` starts one of them. Dynamic H/W models are reshaped to each new input shape on
first use and compiled once per shape; compiled blobs are cached in `state_dir/openvino-cache`.

The backend takes the letterboxed frame as captured (`input.layout` "NHWC", uint8 BGR): a
PrePostProcessor step in front of the model converts it to float, reverses the channels and
divides by 255, so that work runs in OpenVINO's optimized graph instead of the pipeline's Python
thread, and the frame crosses into the runtime at a quarter of the bytes (`backend_options: {input:
tensor}` restores the float NCHW input).

`import openvino` happens in `open()` only, so the plain CPU path never needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import Field, field_validator

from lepton_edge.artifact import Artifact
from lepton_edge.backends.base import (
    BackendBase,
    BackendOptions,
    BackendSettings,
    InferenceHandle,
    TensorSpec,
)
from lepton_edge.errors import BackendUnavailableError, ConfigError, ModelError

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_SUBDIR = "openvino-cache"
# Devices that stand for other devices: not listed in `Core.available_devices`.
VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")
# `precision` -> (INFERENCE_PRECISION_HINT, capability the device must report, or None).
PRECISIONS: dict[str, tuple[str | None, str | None]] = {
    "fp32": ("f32", None),
    "bf16": ("bf16", "BF16"),
    "fp16": ("f16", "FP16"),
    "int8": (None, None),  # the float parts keep the device's default (bf16 on AVX512_BF16)
}


class OpenVinoOptions(BackendSettings):
    """`backend_options` of OpenVINO."""

    # throughput: as many requests in flight as OpenVINO says keep the device busy; latency: one
    hint: Literal["throughput", "latency"] = "throughput"
    # infer requests in flight, overriding OpenVINO's optimum under the hint
    requests: Annotated[int, Field(ge=1, le=64)] | None = None
    # pixels: uint8 BGR frames, normalized in the graph; tensor: float NCHW prepared in Python
    input: Literal["pixels", "tensor"] = "pixels"
    # Pin inference streams to cores (OpenVINO's ENABLE_CPU_PINNING; its own default is on
    # under the throughput hint). Off here: the daemon's capture, prepare and emit threads run
    # on the same cores, and a pinned stream cannot move off a core one of them holds, so the
    # stream waits while another core idles. 16 replayed cameras at 5 fps on 2 cores
    # (bench/bench_cameras.py): unpinned, 80 fps in 5 runs of 5; pinned, 2 runs of 5 fell to
    # 57-60 fps with 0.6 of a core idle.
    pinning: bool = False

    @field_validator("hint", "input", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


def available() -> tuple[bool, str]:
    """Whether OpenVINO imports and sees a device; never raises."""
    try:
        import openvino as ov

        devices = ov.Core().available_devices
    except Exception as err:  # ImportError, or a broken plugin install raising RuntimeError
        return False, f"openvino cannot be used ({type(err).__name__}: {err})"
    if not devices:
        return False, "openvino sees no device"
    return True, f"openvino {ov.__version__} on {', '.join(devices)}"


def x86_has_vnni(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU has an 8-bit dot-product instruction (AVX512_VNNI, AVX_VNNI or AMX);
    None where that cannot be told (not x86, no /proc/cpuinfo). Without one, OpenVINO's INT8
    kernels can saturate on weights that use the full 8-bit range."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines()
                  if line.startswith("flags")), None)
    if flags is None or "sse2" not in flags:
        return None
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags))


def device_capabilities(core: Any, device: str) -> list[str]:
    """The device's OPTIMIZATION_CAPABILITIES (e.g. ['BF16', 'FP32', 'INT8', ...]).
    The one place the backend asks the hardware what it can do."""
    return list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))


class _Handle:
    """One batch in flight on one infer request; `wait()` copies the outputs out, `read(fn)`
    lends the request's own output tensors to `fn` instead (lepton_edge.backends.base)."""

    __slots__ = ("_batch", "_outputs", "_slot")

    def __init__(self, slot: _Slot, batch: np.ndarray) -> None:
        self._slot = slot
        self._batch: np.ndarray | None = batch  # OpenVINO reads it in place until done
        self._outputs: list[np.ndarray] | None = None

    def wait(self) -> list[np.ndarray]:
        if self._outputs is None:
            # The request's output tensors are overwritten by its next run: copy them out.
            self._outputs = self.read(lambda outs: [np.array(o, copy=True) for o in outs])
        return self._outputs

    def read(self, fn: Callable[[list[np.ndarray]], T]) -> T:
        if self._outputs is not None:
            return fn(self._outputs)
        if self._slot.pending is not self:
            raise RuntimeError("openvino: this batch's outputs were already read; its request "
                               "has moved on")
        request = self._slot.request
        request.wait()
        try:
            return fn([t.data for t in request.output_tensors])
        finally:
            self._slot.pending = None  # the request is free for the next batch
            self._batch = None


class _Slot:
    __slots__ = ("pending", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.pending: _Handle | None = None


class _Compiled:
    """A model compiled for one input shape and its ring of infer requests."""

    def __init__(self, compiled: Any, requests: int) -> None:
        self.compiled = compiled
        self.slots = [_Slot(compiled.create_infer_request()) for _ in range(requests)]
        self.next = 0


class OpenVinoBackend(BackendBase):
    """Runs the artifact through OpenVINO's runtime with asynchronous infer requests."""

    name = "openvino"
    Options = OpenVinoOptions

    def __init__(self, artifact: Artifact, options: BackendOptions) -> None:
        if options.precision not in PRECISIONS:
            raise ConfigError(f"precision: openvino runs {', '.join(PRECISIONS)}, "
                              f"got {options.precision!r}")
        settings = self.settings = options.settings_for(OpenVinoOptions)
        hint = settings.hint
        self._requests_override = settings.requests or 0
        # open() gives pixels only to a 3-channel float NCHW image input (`_pixels`)
        self._want_pixels = settings.input == "pixels"
        self.artifact = artifact
        self.options = options
        self.precision = options.precision
        self.device = options.device.upper() if options.device else "CPU"
        self.hint = hint.upper()
        self.encoding, self.model_path = artifact.pick("openvino", options.precision)
        self._core: Any = None
        self._model: Any = None
        self._config: dict[str, Any] = {}
        self._input: TensorSpec | None = None
        self._compiled: dict[tuple[int, ...], _Compiled] = {}
        self._tensors: dict[tuple[Any, ...], Any] = {}  # see _wrapped
        self._requests = 0

    # -- lifecycle ------------------------------------------------------------------------

    def open(self) -> None:
        if self._model is not None:
            return
        try:
            import openvino as ov
        except ImportError as err:
            raise BackendUnavailableError(
                f"openvino cannot be imported ({err}); install it: pip install "
                f"'lepton-edge[openvino]'") from err
        core = ov.Core()
        self._check_device(core)
        hint_precision, capability = PRECISIONS[self.precision]
        if capability is not None:
            self._check_capability(core, capability)
        if self.options.state_dir is not None:
            cache = Path(self.options.state_dir) / CACHE_SUBDIR
            cache.mkdir(parents=True, exist_ok=True)
            core.set_property({"CACHE_DIR": str(cache)})
        config: dict[str, Any] = {"PERFORMANCE_HINT": self.hint}
        if hint_precision is not None:
            config["INFERENCE_PRECISION_HINT"] = hint_precision
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = self.options.threads
        if self.device.startswith(("CPU", "AUTO")):  # a CPU property: GPU/NPU refuse it
            config["ENABLE_CPU_PINNING"] = self.settings.pinning
        self._model = self._load(ov, core)
        self._warn_full_range_weights()
        self._config = config
        self._core = core
        inp = self._model.inputs[0]
        shape = tuple(d.get_length() if d.is_static else None for d in inp.get_partial_shape())
        dtype = np.dtype(inp.get_element_type().to_dtype())
        if self._want_pixels and len(shape) == 4 and shape[1] == 3 and dtype.kind == "f":
            n, _, h, w = shape
            self._input = TensorSpec(inp.get_any_name(), (n, h, w, 3), np.dtype(np.uint8), "NHWC")
        else:
            self._input = TensorSpec(inp.get_any_name(), shape, dtype)
        log.info("openvino %s: %s (%s) on %s, %s hint, precision %s, %s input", ov.__version__,
                 self.model_path.name, self.encoding, self.device, self.hint.lower(),
                 hint_precision or "device default",
                 "uint8 BGR pixel" if self._pixels else "float tensor")

    def close(self) -> None:
        for entry in self._compiled.values():
            for slot in entry.slots:
                if slot.pending is not None:
                    slot.request.wait()  # never free a request OpenVINO is still running
        self._compiled.clear()
        self._tensors.clear()
        self._model = None
        self._core = None

    # -- protocol -------------------------------------------------------------------------


    @property
    def _pixels(self) -> bool:
        """The input is the letterboxed uint8 BGR frame, normalized by a PrePostProcessor."""
        return self.input.layout == "NHWC"

    @property
    def max_in_flight(self) -> int:
        """OPTIMAL_NUMBER_OF_INFER_REQUESTS of the compiled model under the hint (or
        `backend_options.requests`). Before the first batch, this compiles the default input
        shape."""
        if not self._requests:
            self._compile(self._default_shape())
        return self._requests

    def submit(self, batch: np.ndarray) -> InferenceHandle:
        """Start `batch` (`input.layout`: N,H,W,3 uint8 BGR or N,3,H,W float) on the next free
        request of its shape's model."""
        if self._model is None:
            raise RuntimeError("backend is not open")
        entry = self._compiled.get(batch.shape) or self._compile(batch.shape)
        slot = entry.slots[entry.next]
        entry.next = (entry.next + 1) % len(entry.slots)
        if slot.pending is not None:  # the caller overran max_in_flight: finish that one first
            slot.pending.wait()
        batch = np.ascontiguousarray(batch)
        handle = _Handle(slot, batch)
        slot.pending = handle
        if batch.dtype == self.input.dtype:
            slot.request.set_input_tensor(self._wrapped(batch))
            slot.request.start_async()
        else:  # OpenVINO's dispatcher converts it
            slot.request.start_async({0: batch}, share_inputs=True)
        return handle

    def _wrapped(self, batch: np.ndarray) -> Any:
        """The ov.Tensor over `batch`'s own memory, made once per buffer: the pipeline's rings
        reuse a few buffers, and wrapping each batch anew cost about 0.06 ms of the submitting
        thread. The tensor keeps its array alive, so an address is never another array's while
        it is cached; the cache keeps the last 16."""
        key = (batch.ctypes.data, batch.shape, batch.dtype.str)
        tensor = self._tensors.pop(key, None)
        if tensor is None:
            import openvino as ov

            tensor = ov.Tensor(batch, shared_memory=True)
            if len(self._tensors) >= 16:
                self._tensors.pop(next(iter(self._tensors)))
        self._tensors[key] = tensor  # most recent last
        return tensor

    # -- internals ------------------------------------------------------------------------

    def _check_device(self, core: Any) -> None:
        base = self.device.split(":")[0].split(".")[0]
        if base in VIRTUAL_DEVICES:
            return
        devices = core.available_devices
        if not any(d == self.device or d.split(".")[0] == base for d in devices):
            raise BackendUnavailableError(
                f"device: openvino has no {self.device!r} here (it sees "
                f"{', '.join(devices) or 'nothing'}); set device to one of those or AUTO; a GPU "
                f"or NPU needs Intel's driver (intel-opencl-icd / intel-level-zero-npu)")

    def _check_capability(self, core: Any, capability: str) -> None:
        try:
            caps = device_capabilities(core, self.device)
        except Exception as err:  # a device without the property: refuse rather than guess
            raise BackendUnavailableError(
                f"precision {self.precision}: cannot read OPTIMIZATION_CAPABILITIES of "
                f"{self.device} ({err}); name a device explicitly (CPU, GPU, NPU)") from err
        if capability not in caps:
            raise BackendUnavailableError(
                f"precision {self.precision}: device {self.device} does not support "
                f"{capability} (its OPTIMIZATION_CAPABILITIES are {', '.join(caps) or 'empty'}); "
                f"choose precision fp32 or int8, or a device with {capability}")

    def _warn_full_range_weights(self) -> None:
        entry = self.artifact.models.get(self.encoding, {})
        if (entry.get("overflow_fix") == "disable" and self.device.startswith(("CPU", "AUTO"))
                and x86_has_vnni() is False):
            log.warning("%s: built with full 8-bit weights (overflow_fix: disable) for CPUs with "
                        "VNNI or AMX; this CPU has neither, so INT8 results may saturate. Rebuild "
                        "it here with `lepton-edge compile ... --openvino-overflow-fix "
                        "first_layer_only`, or run precision fp32/bf16", self.model_path)

    def _load(self, ov: Any, core: Any) -> Any:
        path = self.model_path
        if not path.is_file():
            raise ModelError(f"{path}: model file not found; rebuild the artifact with "
                             f"`lepton-edge compile`")
        try:
            if path.suffix == ".xml":
                return core.read_model(str(path))
            # convert_model, not read_model: read_model's ONNX frontend leaves conv biases
            # behind a Reshape (INT8-NOTES.md, OpenVINO section); convert_model fuses them.
            return ov.convert_model(str(path))
        except Exception as err:  # OpenVINO raises RuntimeError/OpConversionFailure etc.
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelError(f"{path}: OpenVINO cannot load this model ({first}); the file may "
                             f"be corrupt: re-copy it or rebuild the artifact") from err

    def _default_shape(self) -> tuple[int, ...]:
        spec = self.input
        size = self.options.input_size
        fixed = [1, size, size, 3] if self._pixels else [1, 3, size, size]
        return tuple(d if d is not None else fixed[i] for i, d in enumerate(spec.shape))

    def _compile(self, shape: tuple[int, ...]) -> _Compiled:
        spec = self.input
        fits = len(shape) == len(spec.shape) and all(
            want is None or want == got for want, got in zip(spec.shape, shape, strict=True))
        if not fits:
            want = "x".join("?" if d is None else str(d) for d in spec.shape)
            raise ValueError(f"openvino: batch has shape {tuple(shape)}, the model takes {want} "
                             f"({spec.dtype} {spec.layout}: letterbox with the backend's "
                             f"input.dtype and input.layout)")
        model = self._model.clone()
        if any(d is None for d in spec.shape):
            n, h, w = (shape[0], shape[1], shape[2]) if self._pixels else (shape[0], *shape[2:])
            model.reshape({0: [n, 3, h, w]})
        if self._pixels:
            model = _pixel_input(model)
        try:
            compiled = self._core.compile_model(model, self.device, self._config)
        except Exception as err:  # RuntimeError from the plugin, e.g. an unsupported hint
            raise BackendUnavailableError(
                f"openvino could not compile {self.model_path.name} for {self.device} with "
                f"{self._config} ({str(err).strip().splitlines()[0]})") from err
        if not self._requests:
            optimal = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._requests = self._requests_override or (1 if self.hint == "LATENCY"
                                                         else max(1, optimal))
            log.info("openvino: %d infer requests in flight (%s hint, optimal %d)",
                     self._requests, self.hint.lower(), optimal)
        entry = _Compiled(compiled, self._requests)
        self._compiled[tuple(shape)] = entry
        return entry


def _pixel_input(model: Any) -> Any:
    """`model` (float NCHW RGB 0..1 input) behind a PrePostProcessor that takes the letterboxed
    frame as captured: uint8 NHWC BGR -> f32, BGR -> RGB, / 255, NHWC -> NCHW."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")) \
        .set_color_format(ColorFormat.BGR)
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB) \
        .scale(255.0)
    return ppp.build()
