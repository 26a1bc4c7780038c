"""The offline compiler: calibrate, quantize to INT8 (Q/DQ), gate accuracy, write the artifact.

Modules: `calibration` (frames through the daemon's letterbox), `quantize` (ranges collected
once, one Q/DQ model per encoding), `accuracy` (agreement with float, or COCO ground truth),
`trt_calib_cache` (legacy TensorRT 8.x calibration cache text), `build` (the compile steps) and
`commands` (the `compile` and `eval` subcommands). Nothing heavy is imported here.
"""
