"""lepton-edge: an edge inference runtime for cameras.

Camera streams go through OpenCV, a YOLO-family detector (ONNX Runtime, OpenVINO or TensorRT)
and out over ZeroMQ. See README.md for the two commands and ARCHITECTURE notes.
"""

from __future__ import annotations

__version__ = "0.1.0"
