"""TensorRT plans: their settings, cache key, build and load (issue 3 item 6, issue 12 item 3).

A plan is built from the Q/DQ (or float16/float) ONNX model into a strongly typed network:
precision comes from the graph itself, never from builder flags, which is the only way that
works on both TensorRT 10 and 11 (11 removed `BuilderFlag.FP16/INT8` and implicit calibration,
and makes every network strongly typed, keeping `STRONGLY_TYPED` as an ignored flag;
`EXPLICIT_BATCH` is ignored since 10 and gone in 11). The build sets:

- optimization profiles over batch 1..max_batch and H x W from `min_hw` to `max_hw`, tuned for
  `opt_hw`, for every dynamic dimension of the image input; `profiles` identical copies (2 by
  default) so that the backend's two execution contexts (double buffering) each own one, as
  TensorRT requires of contexts that run concurrently;
- a workspace limit (`MemoryPoolType.WORKSPACE`);
- a timing cache per plan key, next to the plan, so a rebuild of the same plan (after a
  corrupt file, say) reuses the kernel timings, and two builds running at once never share
  one timing-cache file.

`plan_settings()` is the one function that turns an input size into plan settings: the daemon
(`runner.TensorRtBackend`) and `lepton-edge compile --plan` both call it, so a plan built ahead
of time is the plan the daemon looks up. Plans go through `engine_cache.EngineCache`, keyed by
the ONNX and settings, `BUILD_RECIPE`, the TensorRT version, GPU and L4T release. tensorrt is
imported inside functions only; nothing here imports `lepton_edge.compiler`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from lepton_edge.artifact import sha256_file
from lepton_edge.backends.tensorrt.cuda import CudaUnavailable, DeviceInfo, probe_device
from lepton_edge.backends.tensorrt.engine_cache import (
    CachedPlan,
    EngineCache,
    PlanKey,
    l4t_release,
    write_atomic,
)
from lepton_edge.errors import BackendUnavailableError, CompileError
from lepton_edge.pipeline.preprocess import plan_letterbox

if TYPE_CHECKING:  # annotations only: the conformance test reads them (tests/backends/tensorrt)
    import tensorrt

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install 'lepton-edge[tensorrt]' (x86 with an NVIDIA GPU); on Jetson, "
                "JetPack's python3-libnvinfer in a venv made with --system-site-packages")
MIN_TENSORRT = 10
# What the build does with the settings. Bump it whenever build_serialized() changes what a
# plan contains for the same settings (network flags, profiles, builder config), so plans
# built by an older lepton-edge are rebuilt instead of loaded.
BUILD_RECIPE = 2


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


def plan_settings(input_size: int, stride: int = 32, max_batch: int = 1) -> PlanSettings:
    """The plan settings for a daemon letterboxing to `input_size` (its long side): H and W up
    to `input_size`, tuned for a 4:3 camera (640 -> 512x640). The daemon and `compile --plan`
    both derive their settings here, so they agree for every input size."""
    short = plan_letterbox(4 * input_size, 3 * input_size, input_size, stride=stride).dst_h
    low = min(32, input_size)
    # At tiny sizes the stride padding makes the 4:3 letterbox taller than input_size.
    return PlanSettings(max_batch=max_batch, min_hw=(low, low), opt_hw=(short, input_size),
                        max_hw=(max(short, input_size), input_size))


def require_version(version: str) -> None:
    """Refuse TensorRT older than 10 (JetPack 6.0's 8.6 imports, then fails to parse)."""
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT:
        raise BackendUnavailableError(
            f"TensorRT {version} is too old: lepton-edge builds strongly typed plans and needs "
            f"TensorRT >= {MIN_TENSORRT} (JetPack 6.1 or newer; JetPack 6.0 ships 8.6); "
            f"upgrade, or run with `backend: onnxruntime`"
        )


def import_tensorrt() -> ModuleType:
    """The tensorrt module, >= 10, or BackendUnavailableError saying what to install."""
    try:
        import tensorrt
    except Exception as err:  # ImportError, or OSError from a missing libnvinfer
        raise BackendUnavailableError(
            f"tensorrt cannot be imported ({err}); {INSTALL_HINT}; or run with "
            f"`backend: onnxruntime`"
        ) from err
    require_version(str(tensorrt.__version__))
    return tensorrt


def available() -> tuple[bool, str]:
    """Whether plans can be built here (tensorrt >= 10 imports and a CUDA GPU is present), and
    why not. Never raises."""
    try:
        trt = import_tensorrt()
    except BackendUnavailableError as err:
        return False, str(err)
    try:
        dev = probe_device()
    except CudaUnavailable as err:
        return False, f"tensorrt {trt.__version__} is installed but there is no GPU: {err}"
    return True, f"tensorrt {trt.__version__} on {dev.name}"


def _device() -> DeviceInfo:
    try:
        return probe_device()
    except CudaUnavailable as err:
        raise BackendUnavailableError(
            f"TensorRT plans need an NVIDIA GPU and its driver: {err}; build the plan on the "
            f"device (it is cached there), or run with `backend: onnxruntime`"
        ) from err


class TensorRtPlans:
    """TensorRT on one machine: the key, build and deserialization of plans, and the cache
    that ties them together. Holds the `IRuntime` its engines came from (the binding keeps it
    alive too; an engine takes no new attributes to hang it on)."""

    def __init__(self, trt: ModuleType, device: DeviceInfo, l4t: str | None = None) -> None:
        self.trt = trt
        self.device = device
        self.l4t = l4t
        self.logger: tensorrt.ILogger = trt.Logger(trt.Logger.WARNING)
        self.runtime: tensorrt.Runtime = trt.Runtime(self.logger)

    @classmethod
    def here(cls) -> TensorRtPlans:
        """This machine's TensorRT and GPU; BackendUnavailableError without them."""
        return cls(import_tensorrt(), _device(), l4t_release())

    def key(self, onnx_path: Path, settings: PlanSettings) -> PlanKey:
        """The cache key of the plan for `onnx_path` built with `settings` here."""
        return PlanKey(onnx_sha256=sha256_file(onnx_path), settings=settings.as_key(),
                       recipe=BUILD_RECIPE, tensorrt_version=str(self.trt.__version__),
                       gpu_name=self.device.name,
                       compute_capability=self.device.compute_capability, l4t_release=self.l4t)

    def load(self, onnx_path: Path, state_dir: Path, settings: PlanSettings) -> CachedPlan[Any]:
        """The deserialized `ICudaEngine` for `onnx_path`, from the cache or built now."""
        cache = EngineCache(state_dir)
        key = self.key(onnx_path, settings)
        timing = timing_cache_path(cache.root, key)
        return cache.load_or_build(key, lambda: self.build(onnx_path, settings, timing),
                                   self.deserialize)

    def deserialize(self, data: bytes) -> tensorrt.ICudaEngine | None:
        """The engine, or None when TensorRT refuses the bytes (another build, corrupt)."""
        engine: tensorrt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(data)
        return engine

    def build(self, onnx_path: Path, settings: PlanSettings, timing_path: Path) -> bytes:
        """Parse `onnx_path` into a strongly typed network and build the serialized plan."""
        trt = self.trt
        t0 = time.perf_counter()
        builder: tensorrt.Builder = trt.Builder(self.logger)
        network: tensorrt.INetworkDefinition = builder.create_network(network_flags(trt))
        parser: tensorrt.OnnxParser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise CompileError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse this "
                               f"model: {errors or 'no parser error recorded'}")
        config: tensorrt.IBuilderConfig = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
        _add_profiles(builder, network, config, settings, onnx_path)
        _load_timing_cache(config, timing_path)
        serialized: tensorrt.IHostMemory | None = builder.build_serialized_network(network, config)
        if serialized is None:
            raise CompileError(
                f"{onnx_path}: TensorRT {trt.__version__} failed to build a plan (its log "
                f"above says why); try a larger workspace_mib than {settings.workspace_mib}"
            )
        _save_timing_cache(config, timing_path)
        data = bytes(memoryview(serialized))
        log.info("tensorrt: built %s in %.1f s (%d bytes)", onnx_path.name,
                 time.perf_counter() - t0, len(data))
        return data


def network_flags(trt: ModuleType) -> int:
    """STRONGLY_TYPED: required on 10.x for Q/DQ and fp16 graphs, accepted and ignored on
    11.x (value 0 there, deprecated)."""
    flag = trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED
    return 1 << int(flag)


def timing_cache_path(cache_root: Path, key: PlanKey) -> Path:
    """One timing cache per plan key: builds of different plans, even at the same time in two
    processes, never read or replace each other's file."""
    return cache_root / f"{key.digest}.timing"


def build_plan(onnx_path: Path, state_dir: Path, settings: PlanSettings,
               plans: TensorRtPlans | None = None) -> CachedPlan[Any]:
    """Build (or find in the cache) the plan of `onnx_path` under `state_dir/engines/`: what
    `compile --plan` calls. Raises BackendUnavailableError without TensorRT or a GPU, and
    CompileError when the model does not parse or the build fails."""
    plans = plans or TensorRtPlans.here()
    return plans.load(Path(onnx_path), Path(state_dir), settings)


def _add_profiles(builder: tensorrt.Builder, network: tensorrt.INetworkDefinition,
                  config: tensorrt.IBuilderConfig, settings: PlanSettings, onnx_path: Path) -> None:
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    for i in range(network.num_inputs):
        tensor: tensorrt.ITensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if len(dims) != 4:
            raise CompileError(f"{onnx_path}: dynamic input {tensor.name} has shape {dims}; "
                               f"only an image input (N, 3, H, W) may be dynamic")
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
        profile: tensorrt.IOptimizationProfile = builder.create_optimization_profile()
        for name, (min_shape, opt_shape, max_shape) in shapes.items():
            profile.set_shape(name, min_shape, opt_shape, max_shape)
        config.add_optimization_profile(profile)


def _load_timing_cache(config: tensorrt.IBuilderConfig, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cache: tensorrt.ITimingCache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, False):
        if data:
            log.info("tensorrt: reusing timing cache %s (%d bytes)", path, len(data))
        return
    log.warning("tensorrt: timing cache %s does not match this build; starting afresh", path)
    config.set_timing_cache(config.create_timing_cache(b""), False)


def _save_timing_cache(config: tensorrt.IBuilderConfig, path: Path) -> None:
    cache: tensorrt.ITimingCache | None = config.get_timing_cache()
    if cache is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, bytes(memoryview(cache.serialize())))
