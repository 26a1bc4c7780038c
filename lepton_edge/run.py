"""A resolved run: the config file read and validated once, with the command line's overrides,
the artifact loaded and checked against it, the backend chosen and its options typed. One frozen
value that the daemon, `bench` and the CLI take instead of a path.

    run = resolve_run("cam.yaml", [Override("publish.endpoint", "tcp://*:5557", "--endpoint")])
    Daemon(run).run()

Everything a config can get wrong is found here, before a backend loads or a camera opens,
each error naming `file:line: key` or the flag it came from: the schema (`lepton_edge.config`),
the backend's own options (its `Options` model), `classes:` against the artifact's classes,
the model family's decoder, the input spec and `input_size` against the artifact, the encoding
for backend and precision, and the CURVE server key. SIGHUP re-reads the file through the same
function (`ResolvedRun.reread`), reusing the loaded artifact and the chosen backend.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lepton_edge.artifact import ENCODINGS, Artifact, check_runnable, load_artifact
from lepton_edge.backends.base import BackendOptions, BackendSettings, NoOptions, options_model
from lepton_edge.config import (
    Config,
    ConfigFile,
    Override,
    Overrides,
    as_overrides,
    build_config,
    describe_error,
    format_errors,
    read_config_file,
)
from lepton_edge.errors import ConfigError, LeptonError
from lepton_edge.pipeline.decode import DecodeSettings


@dataclass(frozen=True)
class RunOptions:
    """What a run is asked for on the command line besides config overrides."""

    record: Path | None = None  # write every published payload here (JSON lines)
    wait_subscribers: int = 0  # wait for this many subscriptions before the first frame
    wait_timeout: float = 10.0


@dataclass(frozen=True)
class ResolvedRun:
    """A config with its overrides, validated, and everything derived from it: the artifact,
    the backend to build (`auto` resolved) and its options, the decode settings."""

    config: Config
    artifact: Artifact
    backend: str  # a registered backend name (never `auto`) or a plugin `module:Class`
    backend_options: BackendOptions  # `.settings` is the backend's typed `Options`
    decode: DecodeSettings
    file: ConfigFile = field(repr=False, compare=False)  # the parsed file, for lines and reload
    options: RunOptions = RunOptions()
    overrides: tuple[Override, ...] = ()

    @property
    def source(self) -> Path | None:
        """The config file this run was read from."""
        return self.file.path

    def where(self, key: str | Sequence[Any], *, exact: bool = True) -> str:
        """What an error about `key` names: the flag that set it, else `file:line` (the file
        alone when the key is not written in it)."""
        loc = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
        return self.file.where(loc, self.overrides, exact=exact)

    @contextmanager
    def naming(self, key: str) -> Iterator[None]:
        """Prefix a ConfigError raised inside with where `key` was set, e.g. a bind error:
        `cam.yaml:9: publish.endpoint: cannot bind tcp://*:5556 (Address already in use)`."""
        try:
            yield
        except ConfigError as err:
            raise ConfigError(f"{self.where(key)}: {err}") from err

    def reread(self, check: Callable[[Config], None] | None = None) -> ResolvedRun:
        """The config file read again (SIGHUP) with the same overrides and options; the loaded
        artifact and chosen backend are kept when `model` and `backend` did not change.
        `check` sees the new config before anything else is resolved (the daemon refuses a
        change that needs a restart before a new model is looked for)."""
        if self.source is None:
            raise ConfigError("this run has no config file to re-read")
        return resolve_run(self.source, self.overrides, options=self.options, previous=self,
                           check=check)

    def with_overrides(self, overrides: Overrides) -> ResolvedRun:
        """This run with more overrides, validated like the file (which is not read again)."""
        return _resolve(self.file, (*self.overrides, *as_overrides(overrides)), self.options,
                        previous=self)


def resolve_run(path: str | Path, overrides: Overrides | None = None, *,
                options: RunOptions | None = None, previous: ResolvedRun | None = None,
                check: Callable[[Config], None] | None = None) -> ResolvedRun:
    """Read `path` once and resolve everything a run needs. `overrides`: `Override` values (or a
    mapping of dotted key -> value), applied on top of the file and validated like it.
    `previous`: a running run whose artifact and backend choice are reused when unchanged;
    `check`: called with the validated config before the artifact and backend are resolved.
    Raises ConfigError (file:line or flag), ModelError or BackendUnavailableError, one line."""
    return _resolve(read_config_file(path), as_overrides(overrides), options or RunOptions(),
                    previous, check)


def _resolve(file: ConfigFile, overrides: tuple[Override, ...], options: RunOptions,
             previous: ResolvedRun | None,
             check: Callable[[Config], None] | None = None) -> ResolvedRun:
    config = build_config(file, overrides)
    if check is not None:
        check(config)
    artifact = _artifact(config, previous)
    check_runnable(artifact)
    _check_input_size(config, artifact, file, overrides)
    decode = decode_settings(config, artifact, file, overrides)
    backend, settings = _backend(config, file, overrides, previous)
    _check_encoding(backend, config, artifact)
    _check_curve(config, file, overrides)
    return ResolvedRun(config=config, artifact=artifact, backend=backend,
                       backend_options=backend_options(config, settings), decode=decode,
                       options=options, overrides=overrides, file=file)


def _artifact(config: Config, previous: ResolvedRun | None) -> Artifact:
    path = config.resolve(config.model)
    if previous is not None and previous.config.resolve(previous.config.model) == path:
        return previous.artifact
    return load_artifact(path)


def _check_input_size(config: Config, artifact: Artifact, file: ConfigFile,
                      overrides: Sequence[Override]) -> None:
    stride = artifact.input.stride
    if artifact.input.fixed_hw is None and config.input_size % stride:
        raise ConfigError(f"{file.where(('input_size',), overrides)}: input_size: "
                          f"{config.input_size} is not a multiple of model {artifact.name}'s "
                          f"stride {stride}")


def decode_settings(config: Config, artifact: Artifact, file: ConfigFile | None = None,
                    overrides: Sequence[Override] = ()) -> DecodeSettings:
    """Thresholds and the `classes:` filter as class ids of `artifact`; an unknown class name is
    a ConfigError at its line, with the nearest class names."""
    class_ids = None
    if config.classes is not None:
        index = {name: i for i, name in enumerate(artifact.classes)}
        unknown = [(i, c) for i, c in enumerate(config.classes) if c not in index]
        if unknown:
            i, name = unknown[0]
            where = file.where(("classes", i), overrides) if file else "<config>"
            near = difflib.get_close_matches(name, artifact.classes, n=3)
            hint = f"did you mean {', '.join(map(repr, near))}?" if near else (
                f"it has {', '.join(artifact.classes[:8])}, ...")
            raise ConfigError(f"{where}: classes[{i}]: {', '.join(repr(c) for _, c in unknown)} "
                              f"not among the {len(artifact.classes)} classes of model "
                              f"{artifact.name}; {hint}")
        class_ids = tuple(index[c] for c in config.classes)
    t = config.thresholds
    return DecodeSettings(score=t.score, iou=t.iou, max_detections=t.max_detections,
                          class_ids=class_ids)


def _backend(config: Config, file: ConfigFile, overrides: Sequence[Override],
             previous: ResolvedRun | None) -> tuple[str, BackendSettings | None]:
    """The backend to build (`auto` resolved once) and its options validated against the
    `Options` model its module declares (None for a backend that declares none: a plugin
    wrapping a registered backend then hands that one its defaults)."""
    from lepton_edge.backends import backend_class, resolve

    try:
        if previous is not None and previous.config.backend == config.backend:
            name = previous.backend
        else:
            name = resolve(config.backend)
        model = options_model(backend_class(name))
    except LeptonError as err:
        raise type(err)(f"{file.where(('backend',), overrides)}: backend: {err}") from err
    try:
        settings = model.model_validate(config.backend_options)
        return name, None if model is NoOptions else settings
    except ValidationError as err:
        fields = ", ".join(model.model_fields) or "none"

        def reason(e: Any) -> str:
            if e["type"] == "extra_forbidden":
                return f"{name} does not read this option (it reads: {fields})"
            return describe_error(e)

        raise ConfigError(format_errors(err, file, overrides, prefix=("backend_options",),
                                        reason=reason)) from None


def _check_encoding(backend: str, config: Config, artifact: Artifact) -> None:
    """The artifact has an encoding the backend runs at this precision (registered backends;
    a plugin picks its own)."""
    if backend in ENCODINGS:
        artifact.pick(backend, config.precision, warn=False)  # the backend warns as it opens


def _check_curve(config: Config, file: ConfigFile, overrides: Sequence[Override]) -> None:
    from lepton_edge.keys import load_secret_keypair

    curve = config.publish.curve
    if curve is None:
        return
    key = ("publish", "curve", "server_secret_key")
    try:
        load_secret_keypair(config.resolve(curve.server_secret_key))
    except ConfigError as err:
        raise ConfigError(f"{file.where(key, overrides)}: publish.curve.server_secret_key: "
                          f"{err}") from err
    if not config.resolve(curve.allowed_clients).is_dir():
        raise ConfigError(f"{file.where(('publish', 'curve', 'allowed_clients'), overrides)}: "
                          f"publish.curve.allowed_clients: {curve.allowed_clients} is not a "
                          f"directory of client public keys")


def backend_options(config: Config, settings: BackendSettings | None = None) -> BackendOptions:
    """The settings every backend reads, from the config, with the backend's own `settings`."""
    from lepton_edge.config import default_state_dir

    state = config.resolve(config.state_dir) if config.state_dir else default_state_dir()
    return BackendOptions(precision=config.precision, threads=config.threads,
                          device=config.device, state_dir=state, input_size=config.input_size,
                          settings=settings)


__all__ = ["Override", "ResolvedRun", "RunOptions", "backend_options", "decode_settings",
           "resolve_run"]
