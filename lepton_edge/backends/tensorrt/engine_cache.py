"""The TensorRT plan cache: where plans live, what makes one loadable, and rebuilding bad ones.

A plan loads only on the TensorRT build and GPU that made it, so a plan is filed under a key of
everything that decides that: the sha256 of the ONNX bytes, the build settings, the TensorRT
version, the GPU name and compute capability, on Jetson the L4T release, and the version of the
builder recipe (`plan.BUILD_RECIPE`: what the build does with those settings). Each plan
`<state_dir>/engines/<key>.plan` has a sidecar `<key>.json` holding the key's fields and the
plan's size and sha256; both are written atomically (temp file, fsync, rename), the sidecar
last, so a plan whose sidecar is missing, does not match, or whose bytes were truncated is
never handed to TensorRT: it is rebuilt, with a log line that says why. A plan that passes
those checks but still fails to deserialize is rebuilt too.

Nothing here imports TensorRT: the builder and the deserializer are callables passed in
(`plan.TensorRtPlans` provides the real ones), so the whole cache logic runs and is tested on any
machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from lepton_edge.errors import ModelError

log = logging.getLogger(__name__)

APP_DIR = "lepton-edge"
ENGINES_SUBDIR = "engines"
SIDECAR_FORMAT = "lepton-edge/plan-1"
L4T_RELEASE_FILE = Path("/etc/nv_tegra_release")

T = TypeVar("T")


def l4t_release(path: Path = L4T_RELEASE_FILE) -> str | None:
    """The Jetson L4T release line (`# R36 (release), REVISION: 4.3, ...`), or None off Jetson.

    JetPack updates change TensorRT's kernels without always changing its version string, so a
    plan built before an update must not be loaded after it."""
    try:
        first = path.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    # Keep release and revision only: the line also carries a build date that says nothing more.
    fields = [f.strip() for f in first.lstrip("# ").split(",")]
    return ", ".join(f for f in fields if f.startswith(("R", "REVISION"))) or first.strip()


@dataclass(frozen=True)
class PlanKey:
    """Everything that decides whether a serialized plan loads and is the plan that was asked
    for. `settings` are the build settings (profile shapes, workspace, ...) as plain values."""

    onnx_sha256: str
    settings: Mapping[str, Any]
    recipe: int  # plan.BUILD_RECIPE: bumped when the build changes for the same settings
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    l4t_release: str | None = None

    def fields(self) -> dict[str, Any]:
        """The key as JSON-ready values (what the sidecar stores and compares)."""
        out = asdict(self)
        out["settings"] = json.loads(json.dumps(dict(self.settings), sort_keys=True))
        return out

    @property
    def digest(self) -> str:
        """The file name stem: sha256 of the canonical JSON of the fields (first 32 hex)."""
        text = json.dumps(self.fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedPlan(Generic[T]):
    """What `load_or_build` returns: the deserialized object, the plan's path, and whether it
    was built now (False: loaded from the cache)."""

    value: T
    path: Path
    built: bool


class EngineCache:
    """Plans under `<state_dir>/engines/`, keyed by `PlanKey`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / ENGINES_SUBDIR

    def plan_path(self, key: PlanKey) -> Path:
        return self.root / f"{key.digest}.plan"

    def sidecar_path(self, key: PlanKey) -> Path:
        return self.root / f"{key.digest}.json"

    def check(self, key: PlanKey) -> tuple[bytes | None, str]:
        """The cached plan's bytes if its sidecar vouches for them, else None and why not."""
        plan, sidecar = self.plan_path(key), self.sidecar_path(key)
        if not plan.is_file():
            return None, f"no cached plan {plan.name}"
        try:
            meta = json.loads(sidecar.read_text())
        except FileNotFoundError:
            return None, f"{plan.name} has no sidecar {sidecar.name} (an interrupted build?)"
        except (OSError, ValueError) as err:
            return None, f"sidecar {sidecar.name} is unreadable ({err})"
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            return None, f"sidecar {sidecar.name} is not a {SIDECAR_FORMAT} file"
        if meta.get("key") != key.fields():
            return None, f"sidecar {sidecar.name} was written for another key"
        data = plan.read_bytes()
        if len(data) != meta.get("size"):
            return None, (f"{plan.name} is {len(data)} bytes, its sidecar says "
                          f"{meta.get('size')} (truncated or overwritten)")
        digest = hashlib.sha256(data).hexdigest()
        if digest != meta.get("sha256"):
            return None, f"{plan.name} sha256 {digest[:12]}… does not match its sidecar"
        return data, "ok"

    def store(self, key: PlanKey, data: bytes, *, build_s: float | None = None) -> Path:
        """Write the plan, then its sidecar, each atomically. Returns the plan's path."""
        if not data:
            raise ModelError("the TensorRT builder returned an empty plan; see its log above")
        self.root.mkdir(parents=True, exist_ok=True)
        plan = self.plan_path(key)
        write_atomic(plan, data)
        meta = {"format": SIDECAR_FORMAT, "key": key.fields(), "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(), "created": time.time(),
                "build_s": build_s}
        write_atomic(self.sidecar_path(key), json.dumps(meta, indent=1).encode())
        return plan

    def load_or_build(
        self,
        key: PlanKey,
        build: Callable[[], bytes],
        deserialize: Callable[[bytes], T | None],
    ) -> CachedPlan[T]:
        """Load the plan for `key`, or build, store and load it.

        `deserialize(bytes)` returns None (TensorRT's way) or raises when the plan is unusable;
        either way the plan is rebuilt once. A freshly built plan that does not deserialize
        raises ModelError."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock(key):  # two daemons starting together build a plan once
            data, why = self.check(key)
            if data is not None:
                value = _try(deserialize, data)
                if value is not None:
                    log.info("engine cache: loaded %s", self.plan_path(key))
                    return CachedPlan(value, self.plan_path(key), built=False)
                why = f"{self.plan_path(key).name} failed to deserialize"
                log.warning("engine cache: %s; rebuilding it", why)
            elif self.plan_path(key).exists():
                log.warning("engine cache: %s; rebuilding it", why)
            else:
                log.info("engine cache: %s; building it (this takes minutes)", why)
            t0 = time.perf_counter()
            data = build()
            build_s = time.perf_counter() - t0
            path = self.store(key, data, build_s=build_s)
            log.info("engine cache: built %s in %.1f s (%d bytes)", path, build_s, len(data))
            value = _try(deserialize, data)
            if value is None:
                raise ModelError(
                    f"{path}: the plan just built does not deserialize on this machine; check "
                    f"that the TensorRT used to build and to run is the same install"
                )
            return CachedPlan(value, path, built=True)

    @contextlib.contextmanager
    def _lock(self, key: PlanKey) -> Iterator[None]:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, atomic renames still keep files whole
            yield
            return
        with open(self.root / f"{key.digest}.lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _try(deserialize: Callable[[bytes], T | None], data: bytes) -> T | None:
    try:
        return deserialize(data)
    except Exception as err:  # TensorRT raises RuntimeError/TypeError variants; all mean "no"
        log.warning("engine cache: deserializing raised %s: %s", type(err).__name__, err)
        return None


def write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename over `path`: readers see old or new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

