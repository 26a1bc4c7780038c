"""CUDA memory, streams and the letterbox kernel, through pycuda (imported here only).

Design (ARCHITECTURE.md, "Zero-copy on the GPU"):

- One CUDA context: the device's primary context (`pycuda.autoprimaryctx`, never `autoinit`,
  so TensorRT, CuPy or PyTorch in the same process share it). `Gpu.active()` pushes it in the
  calling thread and pops it after, so any thread (capture, inference) may touch CUDA.
- Frames wait in page-locked host memory. On an integrated GPU (Jetson, where
  `cudaDevAttrIntegrated` is set, CPU and GPU share DRAM) the memory is also mapped into the
  device address space and the kernel reads it where the CPU wrote it: zero copies. On a
  discrete GPU the frame is uploaded once, asynchronously, on the slot's stream.
- `CudaLetterbox` is one kernel (letterbox.cu) that reads the uint8 BGR frame and writes the
  normalized, padded, planar RGB tensor straight into the engine's input binding, float32 or
  float16. Its PTX ships with the package (`kernels`: compiled ahead of time by NVRTC); the
  driver JIT-compiles it once per process (`module_from_buffer`, no nvcc, no SourceModule),
  and it is launched with a prepared call.
- Events are blocking-sync with timing disabled: `synchronize()` sleeps the waiting thread
  instead of spinning a CPU core (the default flags spin), and no timestamps are taken.
- Everything is allocated once per source shape and reused; `ALLOCATIONS` counts every
  allocation made here so the tests can prove no frame allocates.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np

from lepton_edge.backends.tensorrt.cuda import kernels
from lepton_edge.errors import BackendUnavailableError
from lepton_edge.pipeline.preprocess import PAD_VALUE, LetterboxPlan

BLOCK = (32, 8, 1)
MODES = ("auto", "mapped", "pinned")

# Every allocation this module makes: {"host": n, "device": n}. Read by the tests.
ALLOCATIONS: Counter[str] = Counter()

_kernels: dict[str, Any] = {}
_kernels_lock = threading.Lock()


def import_pycuda() -> tuple[Any, Any]:
    """(pycuda.driver, pycuda.autoprimaryctx), or BackendUnavailableError saying what to
    install."""
    try:
        # Retains and activates the primary context in this thread; pops it at exit.
        import pycuda.autoprimaryctx as primary
        import pycuda.driver as drv
    except ImportError as err:
        raise BackendUnavailableError(
            f"pycuda cannot be imported ({err}); pip install 'lepton-edge[pycuda]' (it builds "
            f"from source: needs the CUDA toolkit's nvcc and headers, and Python headers)"
        ) from err
    except Exception as err:  # pycuda raises its own LogicError/RuntimeError without a GPU
        raise BackendUnavailableError(f"CUDA cannot start: {err}") from err
    return drv, primary


class Gpu:
    """The primary context of a CUDA device, usable from any thread. `Gpu.start()` is the
    first device's; the constructor takes pycuda's driver module, the context and the device
    (what `start` passes; the CPU tests pass stand-ins)."""

    def __init__(self, drv: Any, context: Any, device: Any) -> None:
        self.drv, self.context, self.device = drv, context, device
        self.name = str(device.name())
        self.integrated = bool(device.get_attribute(drv.device_attribute.INTEGRATED))
        major, minor = device.compute_capability()
        self.compute_capability = f"{major}.{minor}"

    @classmethod
    def start(cls) -> Gpu:
        drv, primary = import_pycuda()
        return cls(drv, primary.context, primary.device)

    def event(self) -> Any:
        """A blocking-sync event without timing: waiting on it sleeps, it never spins."""
        flags = self.drv.event_flags
        return self.drv.Event(flags.BLOCKING_SYNC | flags.DISABLE_TIMING)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the primary context current in this thread for the block."""
        self.context.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def host_mode(self, mode: str = "auto") -> str:
        """`mapped` on integrated GPUs, `pinned` on discrete ones (or what `mode` forces)."""
        if mode not in MODES:
            raise ValueError(f"host memory mode {mode!r}: choose one of {', '.join(MODES)}")
        if mode == "auto":
            return "mapped" if self.integrated else "pinned"
        return mode

    def alloc_device(self, nbytes: int) -> Any:
        ALLOCATIONS["device"] += 1
        return self.drv.mem_alloc(max(1, int(nbytes)))

    def alloc_host(self, shape: tuple[int, ...], dtype: Any, *, mapped: bool = False) -> np.ndarray:
        """Page-locked host array; `mapped` also maps it into the device address space."""
        ALLOCATIONS["host"] += 1
        flags = self.drv.host_alloc_flags.DEVICEMAP if mapped else 0
        return self.drv.pagelocked_empty(shape, dtype, mem_flags=flags)


class FrameInput:
    """Where uint8 BGR frames of one shape wait for the kernel.

    `mapped`: page-locked host memory the GPU reads directly (`device_ptr` is its device-side
    address). `pinned`: page-locked host memory plus a device copy, uploaded per frame."""

    def __init__(self, gpu: Gpu, shape: tuple[int, int, int], mode: str = "auto") -> None:
        self.gpu = gpu
        self.mode = gpu.host_mode(mode)
        self.host = gpu.alloc_host(shape, np.uint8, mapped=self.mode == "mapped")
        if self.mode == "mapped":
            self._device = None
            allocation: Any = self.host.base  # pycuda's HostAllocation behind the array
            self.device_ptr = int(allocation.get_device_pointer())
        else:
            self._device = gpu.alloc_device(self.host.nbytes)
            self.device_ptr = int(self._device)

    @property
    def row_step(self) -> int:
        return int(self.host.strides[0])

    def load(self, image: np.ndarray, stream: Any) -> int:
        """Put `image` where the kernel reads it (no copy when the caller captured straight
        into `self.host`); returns the device address to read from."""
        if image.shape != self.host.shape or image.dtype != np.uint8:
            raise ValueError(f"frame is {image.shape} {image.dtype}, this buffer holds "
                             f"{self.host.shape} uint8")
        if not np.shares_memory(image, self.host):
            np.copyto(self.host, image)
        if self._device is not None:
            self.gpu.drv.memcpy_htod_async(self._device, self.host, stream)
        return self.device_ptr

    def free(self) -> None:
        if self._device is not None:
            self._device.free()
            self._device = None


class CudaLetterbox:
    """The letterbox kernel for one plan: `launch(src_ptr, src_step, dst_ptr, stream)` writes
    the (3, dst_h, dst_w) tensor of `dtype` (float32 or float16) at `dst_ptr`."""

    def __init__(self, gpu: Gpu, plan: LetterboxPlan, dtype: Any = np.float32) -> None:
        self.plan = plan
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"the letterbox kernel writes float32 or float16, not {self.dtype}")
        self._fn = compiled_kernel(gpu, "letterbox_f32" if self.dtype == np.float32
                                   else "letterbox_f16")
        p = plan
        self._grid = ((p.dst_w + BLOCK[0] - 1) // BLOCK[0], (p.dst_h + BLOCK[1] - 1) // BLOCK[1])
        # cv2.resize maps with the ratio of the sizes it was given, not the plan's scale.
        self._params = (np.int32(p.src_w), np.int32(p.src_h), np.int32(p.dst_w),
                        np.int32(p.dst_h), np.int32(p.new_w), np.int32(p.new_h),
                        np.int32(p.pad_x), np.int32(p.pad_y), np.float32(p.src_w / p.new_w),
                        np.float32(p.src_h / p.new_h), np.float32(PAD_VALUE / 255.0))

    @property
    def nbytes(self) -> int:
        return 3 * self.plan.dst_h * self.plan.dst_w * self.dtype.itemsize

    def launch(self, src_ptr: int, src_step: int, dst_ptr: int, stream: Any) -> None:
        sw, sh, dw, dh, nw, nh, px, py, scx, scy, pad = self._params
        self._fn.prepared_async_call(self._grid, BLOCK, stream, np.uintp(src_ptr), sw, sh,
                                     np.int32(src_step), np.uintp(dst_ptr), dw, dh, nw, nh, px,
                                     py, scx, scy, pad)


def compiled_kernel(gpu: Gpu, name: str) -> Any:
    """The prepared kernel `name` of letterbox.cu, loaded on first use in this process from
    the shipped PTX (the primary context must be current). No nvcc: see `kernels`."""
    with _kernels_lock:
        fn = _kernels.get(name)
        if fn is None:
            image, origin = kernels.kernel_image(gpu.compute_capability)
            try:
                module = gpu.drv.module_from_buffer(image)
            except Exception as err:  # pycuda's LogicError/RuntimeError from cuModuleLoadData
                raise BackendUnavailableError(
                    f"the CUDA driver cannot load the letterbox kernel ({origin}: {err}); it "
                    f"needs a driver of CUDA 12.6 or newer (JetPack 6.1+)"
                ) from err
            for kernel in ("letterbox_f32", "letterbox_f16"):
                f = module.get_function(kernel)
                f.prepare("PiiiPiiiiiifff")
                _kernels[kernel] = f
            _kernels["_module"] = module  # keep the module (and its functions) alive
            fn = _kernels[name]
        return fn


class DeviceLetterbox:
    """A standalone GPU letterbox for one source shape: frame in, host (3,H,W) tensor out.

    What the tests and the benchmark drive; the TensorRT backend uses `FrameInput` and
    `CudaLetterbox` the same way but writes into the engine's input binding instead."""

    def __init__(self, gpu: Gpu, plan: LetterboxPlan, dtype: Any = np.float32,
                 mode: str = "auto") -> None:
        self.gpu = gpu
        self.plan = plan
        with gpu.active():
            self.kernel = CudaLetterbox(gpu, plan, dtype)
            self.frame = FrameInput(gpu, (plan.src_h, plan.src_w, 3), mode)
            self.output = gpu.alloc_device(self.kernel.nbytes)
            self.host_out = gpu.alloc_host((3, plan.dst_h, plan.dst_w), self.kernel.dtype)
            self.stream = gpu.drv.Stream()
            self.done = gpu.event()

    def enqueue(self, image: np.ndarray) -> None:
        """Upload (pinned) and letterbox `image` on this object's stream; no copy back."""
        src = self.frame.load(image, self.stream)
        self.kernel.launch(src, self.frame.row_step, int(self.output), self.stream)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Letterbox `image` and return the tensor (the same host array every call)."""
        with self.gpu.active():
            self.done.synchronize()  # the previous frame's host copy is complete
            self.enqueue(image)
            self.gpu.drv.memcpy_dtoh_async(self.host_out, self.output, self.stream)
            self.done.record(self.stream)
            self.done.synchronize()
        return self.host_out

    def close(self) -> None:
        with self.gpu.active():
            self.frame.free()
            self.output.free()
