"""What the runner asks of an engine's I/O tensors, each answer checked (issue 14).

TensorRT reports many failures by return value, not by exception: `set_tensor_address` and
`set_optimization_profile_async` return False, `get_tensor_shape` returns -1 for a dimension
that depends on the data. `trt.nptype` raises a bare TypeError for bfloat16 and FP8. Each
helper here turns those into a ModelError that names the plan, the tensor and the fix.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from lepton_edge.errors import ModelError

if TYPE_CHECKING:
    import tensorrt


def numpy_dtype(trt: ModuleType, data_type: tensorrt.DataType, tensor: str,
                plan: Path | None) -> np.dtype:
    """The numpy dtype of a tensor of TensorRT type `data_type`."""
    try:
        return np.dtype(trt.nptype(data_type))
    except TypeError as err:  # BF16, FP8, INT4, FP4: numpy has no such dtype
        raise ModelError(
            f"{plan}: tensor {tensor} is {data_type}, which numpy cannot hold; export the "
            f"model with float32 or float16 inputs and outputs (keep bf16/fp8 inside the graph)"
        ) from err


def output_shape(context: tensorrt.IExecutionContext, name: str,
                 plan: Path | None) -> tuple[int, ...]:
    """The shape of output `name` for the context's current input shape."""
    shape = tuple(int(d) for d in context.get_tensor_shape(name))
    if any(d < 0 for d in shape):
        raise ModelError(
            f"{plan}: output {name} has a data-dependent shape {shape} (-1: its size is known "
            f"only after inference, e.g. NMS inside the model); lepton-edge needs outputs whose "
            f"shape follows from the input: export the model without NMS (YOLO end2end=False)"
        )
    return shape


def select_profile(context: tensorrt.IExecutionContext, index: int, stream: Any,
                   plan: Path | None) -> None:
    """Make optimization profile `index` the context's, on `stream` (a CUDA stream handle)."""
    if not context.set_optimization_profile_async(index, stream):
        raise ModelError(f"{plan}: TensorRT refused optimization profile {index} (another "
                         f"context holds it, or the plan has fewer); rebuild the plan")


def bind(context: tensorrt.IExecutionContext, name: str, address: int, plan: Path | None) -> None:
    """Point tensor `name` of the context at device memory `address`."""
    if not context.set_tensor_address(name, address):
        raise ModelError(f"{plan}: TensorRT refused the address of tensor {name} (a name not "
                         f"in the plan, or misaligned memory); its log above says which")
