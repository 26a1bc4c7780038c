"""Fetch NVIDIA's TensorRT Python bindings and build the stub libraries they import over.

The bindings (`tensorrt-cu12-bindings`, ~1.2 MB wheels on the registry) are pybind11 modules
linked against libnvinfer, libnvinfer_plugin and libnvonnxparser, which are not to be had
without a GPU download. Importing needs only a few C symbols from them, so a few lines of C
built with `cc -shared` stand in, and every class, method and enum is then there to inspect
(objects cannot be created: the factories return NULL). The API conformance test
(tests/backends/tensorrt/test_conformance.py) imports each version this way.

    python scripts/trt_bindings.py            # all VERSIONS into .cache/trt-bindings/

Exits 0 and says so when the registry cannot be reached (the test then skips, saying why).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "trt-bindings"
VERSIONS = ("10.3.0", "10.13.0.35", "11.4.0.106")  # JetPack 6.1/6.2, current 10.x, newest 11

STUBS = {
    "libnvinfer": ["createInferBuilder_INTERNAL", "createInferRefitter_INTERNAL",
                   "createInferRuntime_INTERNAL", "getBuilderPluginRegistry",
                   "getPluginRegistry"],
    "libnvinfer_plugin": ["initLibNvInferPlugins"],
    "libnvonnxparser": ["createNvOnnxParser_INTERNAL", "createNvOnnxParserRefitter_INTERNAL",
                        "getNvOnnxParserVersion"],
}


def site_dir(version: str) -> Path:
    """Where `tensorrt_bindings` of `version` is unpacked."""
    return CACHE / version


def stub_dir() -> Path:
    return CACHE / "stubs"


def major(version: str) -> str:
    return version.split(".")[0]


def build_stubs(majors: set[str]) -> str | None:
    """The stub libraries (`lib*.so.<major>`); None, or why they cannot be built."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc) to build the stub libraries: apt-get install gcc"
    out = stub_dir()
    out.mkdir(parents=True, exist_ok=True)
    for lib, symbols in STUBS.items():
        src = out / f"{lib}.c"
        src.write_text("".join(f"void *{s}(void) {{ return 0; }}\n" for s in symbols))
        for m in sorted(majors):
            target = out / f"{lib}.so.{m}"
            if target.is_file():
                continue
            subprocess.run([cc, "-shared", "-fPIC", "-o", str(target), str(src),
                            f"-Wl,-soname,{lib}.so.{m}"], check=True)
    return None


def fetch(version: str) -> str | None:
    """Unpack the wheel of `version` for this interpreter; None, or why it is not there."""
    site = site_dir(version)
    if (site / "tensorrt_bindings" / "__init__.py").is_file():
        return None
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pattern = f"tensorrt_cu12_bindings-{version}-cp{sys.version_info[0]}{sys.version_info[1]}-*"
    found = sorted(wheels.glob(pattern + ".whl"))
    if not found:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                              "--retries", "1", "--timeout", "20",
                              "--only-binary=:all:", "-d", str(wheels),
                              f"tensorrt-cu12-bindings=={version}"],
                             capture_output=True, text=True, timeout=300)
        found = sorted(wheels.glob(pattern + ".whl"))
        if run.returncode != 0 or not found:
            tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
            return f"pip download tensorrt-cu12-bindings=={version} failed: {tail}"
    with zipfile.ZipFile(found[0]) as whl:
        whl.extractall(site)
    return None


@cache
def prepare(version: str) -> str | None:
    """Make `version` importable over the stubs; None, or why not."""
    why = fetch(version) or build_stubs({major(version)})
    return why


def main() -> int:
    for version in VERSIONS:
        why = prepare(version)
        print(f"trt-bindings {version}: {why or site_dir(version)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
