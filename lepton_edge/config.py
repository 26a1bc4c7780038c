"""The daemon's YAML config: typed, frozen, unknown keys refused, every error naming the key path
and the file line (`cam.yaml:7: cameras[1].url: required`). Validation reads no files and opens
no cameras. Relative paths resolve against the config file's directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

Precision = Literal["int8", "fp16", "bf16", "fp32"]
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reconnect(_Strict):
    initial: Annotated[float, Field(gt=0, le=60)] = 0.5
    max: Annotated[float, Field(gt=0, le=3600)] = 30.0

    @model_validator(mode="after")
    def _order(self) -> Reconnect:
        if self.max < self.initial:
            raise ValueError(f"max ({self.max}) must be >= initial ({self.initial})")
        return self


class Camera(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    url: Annotated[str, Field(min_length=1)]
    mode: Literal["live", "bench", "replay"] = "live"
    loop: bool = False
    max_frames: Annotated[int, Field(ge=1)] | None = None
    stall_timeout: Annotated[float, Field(gt=0, le=3600)] = 5.0
    open_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    reconnect: Reconnect = Reconnect()

    @model_validator(mode="after")
    def _loop_needs_replay(self) -> Camera:
        if self.loop and self.mode == "live":
            raise ValueError("loop: only meaningful with mode: replay or bench (mode is live)")
        return self


class Thresholds(_Strict):
    score: Annotated[float, Field(gt=0, lt=1)] = 0.35
    iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    max_detections: Annotated[int, Field(ge=1, le=10000)] = 300


class Curve(_Strict):
    """ZeroMQ CURVE: the server's secret key file and a directory of allowed client public keys
    (as written by `lepton-edge keys`)."""

    server_secret_key: str
    allowed_clients: str


class Publish(_Strict):
    endpoint: str = "tcp://*:5556"
    hwm: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    health_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    ipc_mode: Annotated[int, Field(ge=0, le=0o777)] = 0o660
    curve: Curve | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if not v.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError(f"must start with tcp://, ipc:// or inproc://, got {v!r}")
        return v


class Metrics(_Strict):
    port: Annotated[int, Field(ge=1, le=65535)]
    host: str = "127.0.0.1"  # this box only; 0.0.0.0 to let a Prometheus elsewhere scrape


class Config(_Strict):
    model: str
    # A registered name, or `package.module:Class` for a backend of your own (a plugin).
    backend: str = "auto"
    precision: Precision = "fp32"
    device: str = "CPU"
    # Settings only one backend knows (OpenVINO: hint, requests, input); it names unknown ones.
    backend_options: dict[str, str | int] = Field(default_factory=dict)
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    input_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: str | None = None
    thresholds: Thresholds = Thresholds()
    classes: tuple[str, ...] | None = None
    publish: Publish = Publish()
    metrics: Metrics | None = None
    cameras: Annotated[tuple[Camera, ...], Field(min_length=1)]
    source: Path | None = Field(default=None, exclude=True)

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        module, _, attr = v.partition(":")
        if v in BACKENDS or (attr and all(p.isidentifier() for p in module.split("."))
                             and attr.isidentifier()):
            return v
        raise ValueError(f"must be one of {', '.join(BACKENDS)} or a plugin 'package.module:Class'"
                         f", got {v!r}")

    @field_validator("cameras")
    @classmethod
    def _unique_ids(cls, cameras: tuple[Camera, ...]) -> tuple[Camera, ...]:
        seen: dict[str, int] = {}
        for i, cam in enumerate(cameras):
            if cam.id in seen:
                raise ValueError(
                    f"cameras[{i}].id {cam.id!r} is already used by cameras[{seen[cam.id]}]"
                )
            seen[cam.id] = i
        return cameras

    def resolve(self, path: str) -> Path:
        """A path from this config, relative to the config file's directory."""
        p = Path(path).expanduser()
        if p.is_absolute() or self.source is None:
            return p
        return self.source.parent / p

    def camera_url(self, cam: Camera) -> str:
        """The camera URL with a relative file path resolved against the config directory."""
        if "://" in cam.url or cam.url.isdigit() or cam.url.startswith("/") or "!" in cam.url:
            return cam.url
        return str(self.resolve(cam.url))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate `path`. Raises ConfigError naming the file, line and key path."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    return parse_config(text, path, overrides)


def parse_config(text: str, source: Path | None = None,
                 overrides: dict[str, Any] | None = None) -> Config:
    name = str(source) if source else "<config>"
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{name}: the config must be a mapping of keys, got {kind}")
    for key, value in (overrides or {}).items():
        _set_path(data, key, value)
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(_format(err, name, node)) from None


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[last] = value


def _format(err: ValidationError, name: str, node: yaml.Node | None) -> str:
    lines = []
    errors = err.errors()
    nested = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
    for e in errors:
        if e["type"] == "too_short" and len(e["loc"]) == 1 and e["loc"][0] in nested:
            continue  # pydantic also reports the list as empty once an item failed
        loc = [p for p in e["loc"] if p not in ("function-after",)]
        # Pydantic adds the union member / tag names into loc for tagged types; drop non-keys.
        key = _key_path(loc)
        line = _line_of(node, loc)
        where = f"{name}:{line}" if line else name
        lines.append(f"{where}: {key or '(top level)'}: {_reason(e)}")
    return "; ".join(lines)


def _key_path(loc: list[Any]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _reason(e: Any) -> str:
    kind = e["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see the config reference in README.md)"
    msg = str(e["msg"]).removeprefix("Value error, ")
    value = e.get("input")
    if kind in ("literal_error",) or kind.endswith("_parsing") or kind.startswith(
            ("greater", "less", "string_", "multiple")):
        return f"{msg} (got {value!r})"
    return msg


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    """1-based line of the deepest YAML node along `loc` (best effort)."""
    best = node.start_mark.line + 1 if node is not None else None
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == p:
                    best, nxt = k.start_mark.line + 1, v
                    break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            best = node.start_mark.line + 1
        else:
            break
        if node is None:
            break
    return best
