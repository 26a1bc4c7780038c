"""The daemon's YAML config: typed, frozen, unknown keys refused, every error naming the key path
and the file line (`cam.yaml:7: cameras[1].url: required`). Validation reads no files and opens
no cameras. Relative paths resolve against the config file's directory.

`read_config_file` reads and parses the file once (a `ConfigFile`: the data and the YAML nodes
that give every key its line); `build_config` validates it with command-line `Override`s
applied on top, each validated like the file and named by its flag in errors
(`--endpoint: publish.endpoint: port 99999 is out of range 1..65535`). `lepton_edge.run`
turns that into the one resolved value a run takes."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lepton_edge.analysis.inspection.station import InspectConfig
from lepton_edge.analysis.inspection.triggers import Backoff
from lepton_edge.analysis.security import SecurityConfig
from lepton_edge.analysis.snapshots import SnapshotRetention
from lepton_edge.errors import ConfigError
from lepton_edge.pipeline.camera_url import classify
from lepton_edge.sinks.http.config import HttpConfig
from lepton_edge.sinks.mqtt import MqttConfig

Precision = Literal["int8", "fp16", "bf16", "fp32"]
BACKENDS = ("auto", "onnxruntime", "openvino", "tensorrt")


def default_state_dir() -> Path:
    """Where state and caches live: systemd's `$STATE_DIRECTORY` (from `StateDirectory=`; the
    first entry when it lists several), else `$XDG_CACHE_HOME/lepton-edge`, else
    `~/.cache/lepton-edge`."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "lepton-edge"
    return Path.home() / ".cache" / "lepton-edge"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reconnect(Backoff):
    """A camera's reconnect delays: the triggers' backoff with a camera's defaults."""

    initial: Annotated[float, Field(gt=0, le=60)] = 0.5
    max: Annotated[float, Field(gt=0, le=3600)] = 30.0


SECURITY_KEYS = frozenset(SecurityConfig.model_fields)


class Camera(SecurityConfig):
    """One camera; its security analysis keys (detect, motion, track, zones, lines, events,
    snapshots) come from `SecurityConfig`, beside their implementation."""

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
    url: Annotated[str, Field(min_length=1)]
    mode: Literal["live", "bench", "replay"] = "live"
    loop: bool = False
    max_frames: Annotated[int, Field(ge=1)] | None = None
    stall_timeout: Annotated[float, Field(gt=0, le=3600)] = 5.0
    open_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    read_timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    reconnect: Reconnect = Reconnect()
    # The factory line's triggered inspection (analysis/inspection/): inferred on triggers only.
    inspect: InspectConfig | None = None

    @model_validator(mode="after")
    def _loop_needs_replay(self) -> Camera:
        if self.loop and self.mode == "live":
            raise ValueError("loop: only meaningful with mode: replay or bench (mode is live)")
        return self

    @model_validator(mode="after")
    def _analysis(self) -> Camera:
        if self.analysed and self.inspect is not None:
            keys = ", ".join(sorted(SECURITY_KEYS & self.model_fields_set))
            raise ValueError(f"inspect: an inspection station is inferred on its triggers only; "
                             f"it cannot also have {keys} (use two cameras on the same URL)")
        return self  # zone and line ids, required zones, ...: SecurityConfig's own validator

    @property
    def analysed(self) -> bool:
        """Whether this camera has a security analyser (any of its keys set)."""
        return bool(SECURITY_KEYS & self.model_fields_set)


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
        check_endpoint(v)
        return v

    @field_validator("ipc_mode", mode="before")
    @classmethod
    def _octal(cls, v: Any) -> Any:
        return parse_mode(v)


# ZeroMQ bind hosts: `*`, an IPv4 address, a host or interface name, or [IPv6].
_HOST = re.compile(r"^(\*|[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.%A-Za-z]+\])$")
# An ipc:// path becomes a sockaddr_un path: at most 107 bytes on Linux.
IPC_PATH_MAX = 107


def check_endpoint(endpoint: str) -> None:
    """Refuse an endpoint ZeroMQ would misread (`tcp://*:99999` wraps to port 34463,
    `tcp://h:-1` binds 65535). tcp://HOST:PORT with PORT 1..65535 (0 or `*`: any free port),
    ipc://PATH (non-empty, <= 107 bytes), inproc://NAME. Raises ValueError saying what is wrong."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc"):
        raise ValueError(f"must start with tcp://, ipc:// or inproc://, got {endpoint!r}")
    if scheme == "tcp":
        _check_tcp(endpoint, rest)
    elif not rest:
        example = "ipc:///run/lepton-edge/det.sock" if scheme == "ipc" else "inproc://det"
        raise ValueError(f"{endpoint!r}: the {scheme}:// {'path' if scheme == 'ipc' else 'name'} "
                         f"is empty (e.g. {example})")
    elif scheme == "ipc" and len(rest.encode()) > IPC_PATH_MAX:
        raise ValueError(f"{endpoint!r}: the ipc path is {len(rest.encode())} bytes, a Unix "
                         f"socket path takes at most {IPC_PATH_MAX}; choose a shorter one")


def _check_tcp(endpoint: str, rest: str) -> None:
    host, colon, port = rest.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{endpoint!r}: expected tcp://HOST:PORT (HOST `*` for every "
                         f"interface), e.g. tcp://*:5556")
    if not _HOST.match(host):
        hint = " (write an IPv6 address in brackets: tcp://[::1]:5556)" if ":" in host else ""
        raise ValueError(f"{endpoint!r}: {host!r} is not a host, `*` or interface name{hint}")
    if port == "*":
        return
    if not port.isdigit() or not port.isascii():
        raise ValueError(f"{endpoint!r}: port {port!r} is not a number (1..65535, or 0 or * "
                         f"for any free port)")
    if int(port) > 65535:
        raise ValueError(f"{endpoint!r}: port {int(port)} is out of range 1..65535")


def parse_mode(value: Any) -> Any:
    """A file mode as YAML gives it: an int (`0660` in YAML 1.1 is already octal) or an octal
    string like the README's `0o660` (YAML 1.1 reads that as a string), `"0660"` or `"660"`.
    A decimal int that looks like octal digits (660) is refused with the spelling to use."""
    if isinstance(value, str):
        digits = value.strip().lower().removeprefix("0o")
        if re.fullmatch(r"[0-7]{1,4}", digits):
            return int(digits, 8)
        raise ValueError(f"expected an octal file mode such as 0o660, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0o777 \
            and re.fullmatch(r"[0-7]{3,4}", str(value)):
        raise ValueError(f"{value} is decimal; write the mode as 0o{value} (octal)")
    return value


class Metrics(_Strict):
    port: Annotated[int, Field(ge=1, le=65535)]
    host: str = "127.0.0.1"  # this box only; 0.0.0.0 to let a Prometheus elsewhere scrape


class Config(_Strict):
    model: str
    # A registered name, or `package.module:Class` for a backend of your own (a plugin).
    backend: str = "auto"
    precision: Precision = "fp32"
    device: str = "CPU"
    # Settings only one backend knows (OpenVINO: hint, requests, input): each backend module
    # declares them as a typed model (`Options`), checked by `lepton_edge.run.resolve_run`.
    backend_options: dict[str, Any] = Field(default_factory=dict)
    threads: Annotated[int, Field(ge=0, le=256)] = 0
    input_size: Annotated[int, Field(ge=32, le=4096, multiple_of=32)] = 640
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_dir: str | None = None
    thresholds: Thresholds = Thresholds()
    classes: Annotated[tuple[str, ...], Field(min_length=1)] | None = None
    publish: Publish = Publish()
    metrics: Metrics | None = None
    mqtt: MqttConfig | None = None  # the MQTT bridge (sinks/mqtt.py)
    http: HttpConfig | None = None  # the HTTP API and live page (sinks/http/)
    snapshots: SnapshotRetention = SnapshotRetention()  # <state_dir>/snapshots, all cameras
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
        if classify(cam.url) != "file" or "://" in cam.url:  # a file:// URL is taken as is
            return cam.url
        return str(self.resolve(cam.url))


@dataclass(frozen=True)
class Override:
    """One setting given on the command line, applied on top of the file and validated like it.
    `key` is a dotted path (`publish.endpoint`); errors about it name `origin` (the flag, e.g.
    `--endpoint`) instead of a file line."""

    key: str
    value: Any
    origin: str | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    @property
    def label(self) -> str:
        return self.origin or f"override {self.key}"


Overrides = Sequence[Override] | Mapping[str, Any]


def as_overrides(overrides: Overrides | None) -> tuple[Override, ...]:
    """Overrides as `Override` values; a plain mapping (dotted key -> value) has no flag."""
    if not overrides:
        return ()
    if isinstance(overrides, Mapping):
        return tuple(Override(k, v) for k, v in overrides.items())
    return tuple(overrides)


@dataclass(frozen=True)
class ConfigFile:
    """A config file read and parsed once: its top-level mapping and the YAML node tree that
    gives every key its line. `data` is never mutated (overrides apply to a copy)."""

    path: Path | None
    data: Mapping[str, Any]
    node: yaml.Node | None

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<config>"

    def line(self, loc: Iterable[Any], *, exact: bool = False) -> int | None:
        """1-based line of the key at `loc` (a key path such as ("cameras", 1, "url")); the
        deepest key found along it, or with `exact` None when `loc` is not in the file."""
        return _line_of(self.node, list(loc), exact=exact)

    def where(self, loc: Sequence[Any], overrides: Sequence[Override] = (), *,
              exact: bool = False) -> str:
        """What an error about `loc` names: the flag of the override that set it, else
        `file:line` (just `file` when no line is known)."""
        hit = _override_for(loc, overrides)
        if hit is not None:
            return hit.label
        line = self.line(loc, exact=exact)
        return f"{self.name}:{line}" if line else self.name


def read_config_file(path: str | Path) -> ConfigFile:
    """Read and parse `path` (not yet validated). Raises ConfigError naming the file (and the
    line where one is known): unreadable, not UTF-8, not YAML, not a mapping."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); save "
                          f"the config as UTF-8") from None
    return parse_config_text(text, path)


def parse_config_text(text: str, source: Path | None = None) -> ConfigFile:
    name = str(source) if source else "<config>"
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark else name
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{name}: the config must be a mapping of keys, got {kind}")
    return ConfigFile(source, data, node)


def build_config(file: ConfigFile, overrides: Overrides | None = None) -> Config:
    """Validate `file` with `overrides` applied. Raises ConfigError naming file:line:key, or
    the flag of an override, for every problem found (one line)."""
    applied = as_overrides(overrides)
    data = _copy(file.data)
    for o in applied:
        _set_path(data, o.path, o.value)
    try:
        return Config.model_validate({**data, "source": file.path})
    except ValidationError as err:
        raise ConfigError(format_errors(err, file, applied)) from None


def load_config(path: str | Path, overrides: Overrides | None = None) -> Config:
    """Load and validate `path`. Raises ConfigError naming the file, line and key path."""
    return build_config(read_config_file(path), overrides)


def parse_config(text: str, source: Path | None = None,
                 overrides: Overrides | None = None) -> Config:
    return build_config(parse_config_text(text, source), overrides)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    for p in parents:
        child = data.get(p)
        if child is None:
            child = data[p] = {}
        if not isinstance(child, dict):
            return  # the file's own value is wrong here: validation names its line
        data = child
    data[last] = value


def _override_for(loc: Sequence[Any], overrides: Sequence[Override]) -> Override | None:
    """The last override that set `loc` or a key above or below it."""
    keys = tuple(str(p) for p in loc)
    for o in reversed(overrides):
        n = min(len(o.path), len(keys))
        if o.path[:n] == keys[:n]:
            return o
    return None


def format_errors(err: ValidationError, file: ConfigFile, overrides: Sequence[Override] = (),
                  prefix: tuple[Any, ...] = (),
                  reason: Callable[[Any], str] | None = None) -> str:
    """One line for all of a pydantic error's problems, each `where: key.path: reason`.
    `prefix` is the key path of the validated value inside the file (backend options)."""
    lines = []
    errors = err.errors()
    nested = {e["loc"][0] for e in errors if len(e["loc"]) > 1}
    for e in errors:
        if e["type"] == "too_short" and len(e["loc"]) == 1 and e["loc"][0] in nested:
            continue  # pydantic also reports the list as empty once an item failed
        loc = [*prefix, *(p for p in e["loc"] if p not in ("function-after",))]
        where = file.where(loc, overrides)
        text = (reason or describe_error)(e)
        lines.append(f"{where}: {key_path(loc) or '(top level)'}: {text}")
    return "; ".join(lines)


def key_path(loc: list[Any]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def describe_error(e: Any) -> str:
    """The reason part of one pydantic error, as a config error line shows it."""
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


def _line_of(node: yaml.Node | None, loc: list[Any], *, exact: bool = False) -> int | None:
    """1-based line of the deepest YAML node along `loc` (best effort); with `exact`, None
    unless every key of `loc` is in the file."""
    best = node.start_mark.line + 1 if node is not None else None
    for p in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for k, v in node.value:
                if k.value == p:
                    best, nxt = k.start_mark.line + 1, v
                    break
            if nxt is None:
                return None if exact else best
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(p, int) and p < len(node.value):
            node = node.value[p]
            best = node.start_mark.line + 1
        else:
            return None if exact else best
    return best
