"""The TensorRT backend and everything a device needs to run it: the runner (`runner`), the
plans (`plan`: settings, key, build, load; `engine_cache`: where plans live), the checked
tensor I/O (`tensors`) and the CUDA pieces (`cuda`: device probe, buffers, the letterbox
kernel shipped as PTX). The compiler calls into this package; nothing here imports
`lepton_edge.compiler`. tensorrt and pycuda are imported inside functions only."""

from __future__ import annotations

from lepton_edge.backends.tensorrt.runner import TensorRtBackend, available

__all__ = ["TensorRtBackend", "available"]
