"""Compiled artifacts: a directory with `manifest.yaml` and the model files it lists.

The manifest says how to feed the model (input name, layout, normalization, letterbox), what it
detects (class names, decoder family) and which encodings exist (`fp32`, `int8-cpu`,
`int8-device`, `int8-openvino`, ...), with the sha256 of every file. The daemon refuses an
artifact whose files do not match. A bare `.onnx` path is accepted too, as an fp32-only artifact
described from the model's own metadata (what a developer points at while experimenting).
"""

from __future__ import annotations

import ast
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lepton_edge.errors import ModelError

log = logging.getLogger(__name__)

MANIFEST = "manifest.yaml"
FORMAT = "lepton-edge/artifact-1"

# Which encodings a runtime may use for a requested precision, in order of preference.
ENCODINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "onnxruntime": {"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("int8-cpu", "int8-device")},
    "openvino": {
        "fp32": ("fp32",), "bf16": ("fp32",), "fp16": ("fp32",),
        "int8": ("int8-openvino", "int8-cpu"),
    },
    # fp16 is the artifact's float16 model or nothing: the fp32 one would run silently slower.
    "tensorrt": {"fp32": ("fp32",), "fp16": ("fp16",), "int8": ("int8-device",)},
}


@dataclass(frozen=True)
class InputInfo:
    """How to feed the model: NCHW, RGB, 0..1, gray-padded letterbox."""

    name: str
    shape: tuple[int | str, ...]
    stride: int = 32
    default_size: int = 640
    layout: str = "NCHW"
    color: str = "RGB"
    scale: float = 1.0 / 255.0
    pad_value: int = 114

    @property
    def fixed_hw(self) -> tuple[int, int] | None:
        """(H, W) when the model's spatial size is static, else None."""
        h, w = self.shape[2], self.shape[3]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact."""

    root: Path
    name: str
    family: str
    input: InputInfo
    classes: tuple[str, ...]
    models: Mapping[str, Mapping[str, Any]]
    manifest: Mapping[str, Any] = field(repr=False)

    def model_path(self, encoding: str) -> Path:
        try:
            return self.root / self.models[encoding]["file"]
        except KeyError:
            raise ModelError(
                f"{self.root}: the artifact has no {encoding!r} model (it has: "
                f"{', '.join(sorted(self.models))}); compile it with `lepton-edge compile`"
            ) from None

    def gate(self, encoding: str) -> Mapping[str, Any] | None:
        """The compile's gate record of `encoding` (`score`, `metric`, `floor`, `below_floor`,
        ...), or None for an encoding the compile did not score (fp32, older manifests)."""
        entry = self.models.get(encoding, {})
        record = entry.get("gate") if isinstance(entry, Mapping) else None
        return record if isinstance(record, Mapping) else None

    def pick(self, runtime: str, precision: str, *, warn: bool = True) -> tuple[str, Path]:
        """The encoding (and its file) that `runtime` runs for `precision`; with `warn`, a
        WARNING when the compile marked that encoding below its accuracy floor."""
        wanted = ENCODINGS.get(runtime, {}).get(precision, ())
        for enc in wanted:
            if enc in self.models:
                if warn:
                    self._warn_below_floor(runtime, precision, enc)
                return enc, self.model_path(enc)
        have = ", ".join(sorted(self.models)) or "none"
        hint = {
            "int8": "compile an INT8 model with `lepton-edge compile`",
            "fp16": "rebuild the artifact with `lepton-edge compile` (it writes model.fp16.onnx), "
                    "or choose precision int8 or fp32",
        }.get(precision, "choose another precision")
        raise ModelError(
            f"{self.root}: precision {precision!r} on {runtime} needs one of "
            f"{', '.join(wanted) or '(no encoding)'}, the artifact has {have}; {hint}"
        )


    def _warn_below_floor(self, runtime: str, precision: str, encoding: str) -> None:
        g = self.gate(encoding)
        if g is None or not g.get("below_floor"):
            return
        log.warning("%s: %s:%s runs %s, which the compile marked below its accuracy floor: "
                    "%s %.3f < floor %g (agreement with fp32 on its held-out frames); %s",
                    self.root, runtime, precision, encoding, _metric(g), float(g["score"]),
                    float(g["floor"]), self._better(encoding, runtime, precision))

    def _better(self, encoding: str, runtime: str, precision: str) -> str:
        """What to run instead: the best-scoring encoding at or above its floor at the same
        precision (any runtime), and the best one on the same runtime, as `runtime:precision`."""
        options: list[tuple[float, str, str, str]] = []  # score, runtime, precision, text
        for rt, precisions in ENCODINGS.items():
            for prec, wanted in precisions.items():
                enc = next((e for e in wanted if e in self.models), None)
                g = self.gate(enc) if enc is not None and enc != encoding else None
                if g is None or g.get("below_floor"):
                    continue
                options.append((float(g["score"]), rt, prec,
                                f"{rt}:{prec} scores {float(g['score']):.3f} {_metric(g)} "
                                f"({enc})"))
        if not options:
            return ("no other scored encoding of this artifact reaches its floor (fp32 is the "
                    "reference)")
        same_precision = [o for o in options if o[2] == precision]
        same_runtime = [o for o in options if o[1] == runtime]
        picks = [max(same_precision or options, key=lambda o: o[0])]
        if same_runtime and picks[0][1] != runtime:
            picks.append(max(same_runtime, key=lambda o: o[0]))
        return "better: " + "; on this runtime: ".join(p[3] for p in picks)


def _metric(gate: Mapping[str, Any]) -> str:
    metric = str(gate.get("metric", "map50"))
    return metric.replace("map50_min", "min") if metric.startswith("map50_min") else metric


def check_runnable(art: Artifact) -> None:
    """Refuse an artifact the runtime cannot feed or decode, before any backend or camera
    opens: a model family without a decoder, an input the letterbox does not produce
    (NCHW, 3 channels, RGB scaled by 1/255), a stride that is not positive."""
    from lepton_edge.pipeline.decode import DECODERS

    where = art.root / MANIFEST if art.root.is_dir() else art.root
    if art.family not in DECODERS:
        raise ModelError(f"{where}: model family {art.family!r} has no decoder here (known: "
                         f"{', '.join(sorted(DECODERS))}); export a YOLOv8-style detect model")
    inp = art.input
    problems = []
    if len(inp.shape) != 4 or inp.shape[1] != 3:
        problems.append(f"shape {list(inp.shape)} (expected [N, 3, H, W])")
    if inp.layout != "NCHW":
        problems.append(f"layout {inp.layout} (expected NCHW)")
    if inp.color != "RGB":
        problems.append(f"color {inp.color} (expected RGB)")
    if abs(inp.scale - 1 / 255) > 1e-9:
        problems.append(f"scale {inp.scale} (expected 1/255)")
    if inp.stride < 1:
        problems.append(f"stride {inp.stride} (expected a positive integer)")
    if problems:
        raise ModelError(f"{where}: input {inp.name}: the runtime's letterbox cannot feed "
                         f"{', '.join(problems)}")
    if not art.classes:
        raise ModelError(f"{where}: the manifest lists no classes")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_artifact(path: str | Path, *, verify: bool = True) -> Artifact:
    """Load an artifact directory (or a bare .onnx file). Raises ModelError saying which file
    is wrong and why."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model not found (expected an artifact directory with "
                         f"{MANIFEST}, or an .onnx file)")
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelError(f"{path}: not an artifact directory or an .onnx file")
        return _artifact_from_manifest(path.parent, describe_onnx(path), verify=False)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise ModelError(f"{path}: no {MANIFEST} in this directory; build the artifact with "
                         f"`lepton-edge compile MODEL.onnx --name NAME`")
    manifest = _read_manifest(mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{mpath}: not a lepton-edge manifest (expected format: {FORMAT})")
    return _artifact_from_manifest(path, manifest, verify=verify)


def _read_manifest(mpath: Path) -> Any:
    """The parsed manifest; one line naming the file (and line) when it is not YAML."""
    hint = "rebuild the artifact with `lepton-edge compile` or re-copy it"
    try:
        return yaml.safe_load(mpath.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelError(f"{mpath}: not UTF-8 text; {hint}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{mpath}:{mark.line + 1}" if mark else str(mpath)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ModelError(f"{where}: not valid YAML ({problem}); {hint}") from None
    except OSError as err:
        raise ModelError(f"{mpath}: cannot read the manifest ({err.strerror})") from err


def _artifact_from_manifest(root: Path, m: dict[str, Any], *, verify: bool) -> Artifact:
    try:
        inp = m["input"]
        info = InputInfo(
            name=inp["name"], shape=tuple(inp["shape"]), stride=int(inp.get("stride", 32)),
            default_size=int(inp.get("default_size", 640)), layout=inp.get("layout", "NCHW"),
            color=inp.get("color", "RGB"), scale=float(inp.get("scale", 1 / 255)),
            pad_value=int(inp.get("pad_value", 114)),
        )
        art = Artifact(root=root, name=m["name"], family=m["family"], input=info,
                       classes=tuple(m["classes"]), models=m["models"], manifest=m)
    except KeyError as err:
        raise ModelError(f"{root / MANIFEST}: malformed manifest (key {err.args[0]!r} missing); "
                         f"rebuild the artifact with `lepton-edge compile`") from err
    except (TypeError, ValueError, AttributeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{root / MANIFEST}: malformed manifest ({first}); rebuild the "
                         f"artifact with `lepton-edge compile`") from err
    if not isinstance(art.models, Mapping) or not all(
            isinstance(e, Mapping) and "file" in e for e in art.models.values()):
        raise ModelError(f"{root / MANIFEST}: malformed manifest (models: each encoding needs a "
                         f"file); rebuild the artifact with `lepton-edge compile`")
    if verify:
        for rel, digest in (m.get("files") or {}).items():
            f = root / rel
            if not f.is_file():
                raise ModelError(f"{f}: listed in the manifest but missing; rebuild the artifact")
            actual = sha256_file(f)
            if actual != digest:
                raise ModelError(
                    f"{f}: sha256 {actual[:12]}… does not match the manifest's {digest[:12]}…; "
                    f"the file is corrupt or was replaced; rebuild with `lepton-edge compile`"
                )
    return art


def describe_onnx(path: Path) -> dict[str, Any]:
    """A manifest for a float ONNX model from its own graph and metadata (Ultralytics exports
    carry `names`, `stride`, `imgsz`)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others; all mean the same here
        raise ModelError(f"{path}: not a valid ONNX model ({type(err).__name__}: {err})") from err
    meta = {p.key: p.value for p in model.metadata_props}
    graph_inputs = [i for i in model.graph.input
                    if i.name not in {t.name for t in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise ModelError(f"{path}: expected one image input, found {len(graph_inputs)}")
    inp = graph_inputs[0]
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
             for d in inp.type.tensor_type.shape.dim]
    if len(shape) != 4 or shape[1] != 3:
        raise ModelError(f"{path}: input {inp.name} has shape {shape}, expected [N, 3, H, W]")
    classes = _parse_names(meta.get("names"))
    if not classes:
        out = model.graph.output[0].type.tensor_type.shape.dim
        n = out[1].dim_value - 4 if len(out) == 3 and out[1].dim_value > 4 else 0
        classes = [f"class{i}" for i in range(n)]
    imgsz = _parse_literal(meta.get("imgsz"), [640, 640])
    return {
        "format": FORMAT,
        "name": path.stem,
        "family": "yolov8" if meta.get("task", "detect") == "detect" else meta["task"],
        "input": {"name": inp.name, "shape": shape, "stride": int(meta.get("stride", 32)),
                  "default_size": int(max(imgsz)), "layout": "NCHW", "color": "RGB",
                  "scale": 1 / 255, "pad_value": 114},
        "classes": classes,
        "models": {"fp32": {"file": path.name, "precision": "fp32"}},
    }


def _parse_literal(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return default


def _parse_names(text: str | None) -> list[str]:
    names = _parse_literal(text, None)
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return []


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest.yaml` with the sha256 of every model file (atomically)."""
    files: dict[str, str] = {}
    for entry in manifest["models"].values():
        for rel in [entry["file"], *entry.get("extra_files", [])]:
            files[rel] = sha256_file(root / rel)
            if rel == entry["file"]:
                entry["sha256"] = files[rel]
    manifest = {**manifest, "format": FORMAT, "files": files}
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False, width=100))
    tmp.replace(root / MANIFEST)
    return root / MANIFEST
