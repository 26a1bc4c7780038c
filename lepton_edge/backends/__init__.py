"""Backend registry: import strings, imported only when selected (tensorrt, pycuda and
openvino stay unimported on the plain CPU path)."""

from __future__ import annotations

import importlib
import importlib.util
import logging

from lepton_edge.artifact import Artifact
from lepton_edge.backends.base import Backend, BackendOptions
from lepton_edge.errors import BackendUnavailableError

log = logging.getLogger(__name__)

REGISTRY: dict[str, str] = {
    "onnxruntime": "lepton_edge.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "lepton_edge.backends.openvino:OpenVinoBackend",
    "tensorrt": "lepton_edge.backends.tensorrt:TensorRtBackend",
}

# `backend: auto` tries these in order; each module's `available()` says whether it can run here.
AUTO_ORDER = ("tensorrt", "openvino", "onnxruntime")

# Which package provides each backend, for the error a missing one raises.
EXTRAS = {
    "onnxruntime": "pip install onnxruntime (a core dependency: reinstall lepton-edge)",
    "openvino": "pip install 'lepton-edge[openvino]'",
    "tensorrt": "pip install 'lepton-edge[tensorrt,pycuda]'; on Jetson, JetPack's "
                "python3-libnvinfer and a venv with --system-site-packages",
}


def _module_name(name: str) -> str:
    return REGISTRY[name].split(":")[0]


def backend_class(name: str) -> type:
    """The backend class for `name` (a registered name or a plugin `module:Class`), importing
    its module now."""
    if ":" in name and name not in REGISTRY:
        module_name, attr = name.split(":", 1)
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise BackendUnavailableError(
                f"backend plugin {name!r} cannot be loaded ({err})"
            ) from err
    if name not in REGISTRY:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of auto, {', '.join(REGISTRY)}"
        )
    module_name, attr = REGISTRY[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailableError(
            f"backend {name!r} cannot be imported ({err}); install it: {EXTRAS[name]}"
        ) from err
    return getattr(module, attr)


def available(name: str) -> tuple[bool, str]:
    """Whether registered backend `name` can run on this machine, and why not. Imports its
    module only when its runtime package is installed at all."""
    runtime_pkg = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}
    if importlib.util.find_spec(runtime_pkg[name]) is None:
        return False, f"{runtime_pkg[name]} is not installed ({EXTRAS[name]})"
    module = importlib.import_module(_module_name(name))
    probe = getattr(module, "available", None)
    return probe() if probe else (True, "")


def resolve(name: str) -> str:
    """Resolve `auto` to the first backend that can run here."""
    if name != "auto":
        return name
    reasons = []
    for candidate in AUTO_ORDER:
        ok, why = available(candidate)
        if ok:
            log.info("backend auto: using %s", candidate)
            return candidate
        reasons.append(f"{candidate}: {why}")
        log.debug("backend auto: skipping %s (%s)", candidate, why)
    raise BackendUnavailableError("no backend can run here: " + "; ".join(reasons))


def create_backend(name: str, artifact: Artifact, options: BackendOptions) -> Backend:
    """Build (not open) the backend `name` (`auto` resolved) for `artifact`."""
    cls = backend_class(resolve(name))
    return cls(artifact, options)


__all__ = ["REGISTRY", "Backend", "BackendOptions", "available", "create_backend", "resolve"]
