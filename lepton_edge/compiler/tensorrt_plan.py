"""TensorRT plans from the artifact's ONNX models (issue 3, item 6).

A plan is built from the Q/DQ (or float) ONNX model into a strongly typed network: precision
comes from the graph itself, never from builder flags, which is the only way that works on both
TensorRT 10 and 11 (11 removed `BuilderFlag.FP16/INT8` and implicit calibration, and makes every
network strongly typed, keeping `STRONGLY_TYPED` as an ignored flag; `EXPLICIT_BATCH` is ignored
since 10 and may be gone). The build sets:

- optimization profiles over batch 1..max_batch and H x W from `min_hw` to `max_hw`, tuned for
  `opt_hw`, for every dynamic dimension of the image input; `profiles` identical copies (2 by
  default) so that the backend's two execution contexts (double buffering) each own one, as
  TensorRT requires of contexts that run concurrently;
- a workspace limit (`MemoryPoolType.WORKSPACE`);
- a timing cache persisted next to the plans, so a rebuild (new model, new settings) reuses
  the kernel timings measured for this GPU and TensorRT version.

Plans go through `lepton_edge.engine_cache`, keyed by the ONNX and settings hash, TensorRT
version, GPU and L4T release. tensorrt is imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..artifact import sha256_file
from ..backends.cuda import CudaUnavailable, probe_device
from ..engine_cache import EngineCache, PlanKey, l4t_release, write_atomic
from ..errors import BackendUnavailableError, CompileError

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'lepton-edge[tensorrt]' (x86 with an NVIDIA GPU); on Jetson, "
                "JetPack's python3-libnvinfer in a venv made with --system-site-packages")


@dataclass(frozen=True)
class PlanSettings:
    """What a plan is built for. Part of the cache key: change one and the plan is rebuilt."""

    max_batch: int = 1
    min_hw: tuple[int, int] = (32, 32)
    opt_hw: tuple[int, int] = (512, 640)
    max_hw: tuple[int, int] = (640, 640)
    workspace_mib: int = 1024
    profiles: int = 2

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.profiles < 1 or self.workspace_mib < 1:
            raise CompileError(f"plan settings must be positive, got {self}")
        for i, axis in enumerate("HW"):
            lo, opt, hi = self.min_hw[i], self.opt_hw[i], self.max_hw[i]
            if not 1 <= lo <= opt <= hi:
                raise CompileError(
                    f"plan {axis}: need min <= opt <= max, got {lo}, {opt}, {hi}; set opt_hw "
                    f"within min_hw..max_hw"
                )

    def as_key(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def available() -> tuple[bool, str]:
    """Whether plans can be built here (tensorrt imports and a CUDA GPU is present), and why
    not. Never raises."""
    try:
        import tensorrt as trt
    except Exception as err:  # ImportError, or OSError from a missing libnvinfer
        return False, f"tensorrt cannot be imported ({err}); {INSTALL_HINT}"
    try:
        dev = probe_device()
    except CudaUnavailable as err:
        return False, f"tensorrt {trt.__version__} is installed but there is no GPU: {err}"
    return True, f"tensorrt {trt.__version__} on {dev.name}"


def plan_key(onnx_path: Path, settings: PlanSettings) -> PlanKey:
    """The cache key of the plan for `onnx_path` built with `settings` on this machine."""
    trt = _import_tensorrt()
    dev = _device()
    return PlanKey(onnx_sha256=sha256_file(onnx_path), settings=settings.as_key(),
                   tensorrt_version=trt.__version__, gpu_name=dev.name,
                   compute_capability=dev.compute_capability, l4t_release=l4t_release())


def build_plan(
    onnx_path: Path,
    state_dir: Path,
    *,
    max_batch: int = 1,
    opt_hw: tuple[int, int] = (512, 640),
    max_hw: tuple[int, int] = (640, 640),
    workspace_mib: int = 1024,
) -> Path:
    """Build (or find in the cache) the plan of `onnx_path` and return its path under
    `state_dir/engines/`. Raises BackendUnavailableError without TensorRT or a GPU, and
    CompileError when the model does not parse or the build fails."""
    settings = PlanSettings(max_batch=max_batch, opt_hw=(int(opt_hw[0]), int(opt_hw[1])),
                            max_hw=(int(max_hw[0]), int(max_hw[1])), workspace_mib=workspace_mib)
    _, path = load_engine(Path(onnx_path), Path(state_dir), settings)
    return path


def load_engine(onnx_path: Path, state_dir: Path, settings: PlanSettings) -> tuple[Any, Path]:
    """The deserialized `ICudaEngine` for `onnx_path` and its plan path, from the cache or built
    now. The engine keeps its `IRuntime` alive (attribute `_lepton_runtime`)."""
    trt = _import_tensorrt()
    key = plan_key(onnx_path, settings)
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    cache = EngineCache(state_dir)

    def deserialize(data: bytes) -> Any:
        engine = runtime.deserialize_cuda_engine(data)  # None when the plan is unusable
        if engine is not None:
            engine._lepton_runtime = runtime  # the runtime must outlive its engines
        return engine

    def build() -> bytes:
        return build_serialized(onnx_path, settings, cache.root, logger)

    loaded = cache.load_or_build(key, build, deserialize)
    return loaded.value, loaded.path


def build_serialized(onnx_path: Path, settings: PlanSettings, cache_dir: Path,
                     logger: Any = None) -> bytes:
    """Parse `onnx_path` into a strongly typed network and build the serialized plan."""
    trt = _import_tensorrt()
    logger = logger or trt.Logger(trt.Logger.WARNING)
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on 10.x, accepted and ignored on 11.x
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CompileError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse this model: "
                           f"{errors or 'no parser error recorded'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    _add_profiles(builder, network, config, settings, onnx_path)
    timing_path = cache_dir / _timing_cache_name(trt.__version__)
    _load_timing_cache(config, timing_path)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(
            f"{onnx_path}: TensorRT {trt.__version__} failed to build a plan (its log above "
            f"says why); try a larger workspace_mib than {settings.workspace_mib}"
        )
    _save_timing_cache(config, timing_path)
    data = bytes(memoryview(serialized))
    log.info("tensorrt: built %s in %.1f s (%d bytes)", onnx_path.name,
             time.perf_counter() - t0, len(data))
    return data


def _add_profiles(builder: Any, network: Any, config: Any, settings: PlanSettings,
                  onnx_path: Path) -> None:
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if len(dims) != 4:
            raise CompileError(f"{onnx_path}: dynamic input {tensor.name} has shape {dims}; only "
                               f"an image input (N, 3, H, W) may be dynamic")
        lo, opt, hi = [list(dims) for _ in range(3)]
        if dims[0] < 0:
            lo[0], opt[0], hi[0] = 1, settings.max_batch, settings.max_batch
        for axis, k in ((2, 0), (3, 1)):
            if dims[axis] < 0:
                lo[axis], opt[axis] = settings.min_hw[k], settings.opt_hw[k]
                hi[axis] = settings.max_hw[k]
        if dims[1] < 0:
            lo[1] = opt[1] = hi[1] = 3
        shapes[tensor.name] = (tuple(lo), tuple(opt), tuple(hi))
    if not shapes:
        return  # static model: no profile needed, and contexts may share the default one
    for _ in range(settings.profiles):
        profile = builder.create_optimization_profile()
        for name, (min_shape, opt_shape, max_shape) in shapes.items():
            profile.set_shape(name, min_shape, opt_shape, max_shape)
        config.add_optimization_profile(profile)


def _timing_cache_name(trt_version: str) -> str:
    dev = _device()
    ident = f"{trt_version}|{dev.name}|{dev.compute_capability}|{l4t_release()}"
    return f"timing-{hashlib.sha256(ident.encode()).hexdigest()[:16]}.cache"


def _load_timing_cache(config: Any, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b""
    if config.set_timing_cache(config.create_timing_cache(data), False):
        if data:
            log.info("tensorrt: reusing timing cache %s (%d bytes)", path, len(data))
        return
    log.warning("tensorrt: timing cache %s does not match this build; starting afresh", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, bytes(memoryview(cache.serialize())))


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except Exception as err:
        raise BackendUnavailableError(
            f"TensorRT plans need the tensorrt package, which cannot be imported here ({err}); "
            f"{INSTALL_HINT}; or run with `backend: onnxruntime`"
        ) from err
    return trt


def _device() -> Any:
    try:
        return probe_device()
    except CudaUnavailable as err:
        raise BackendUnavailableError(
            f"TensorRT plans need an NVIDIA GPU and its driver: {err}; build the plan on the "
            f"device (it is cached there), or run with `backend: onnxruntime`"
        ) from err
