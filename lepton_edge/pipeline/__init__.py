"""The daemon's pipeline as stages with typed hand-offs, data flowing one way:

schedule (sources, round robin, the analyser's admit) -> prepare (letterbox) -> infer (backend,
in flight, in order) -> decode (NMS) -> analyse (per-camera state) -> emit (sinks, health).
`runner.Pipeline` wires them onto three threads; `stats.RunStats` is what health, metrics,
bench and the summary read.
"""
