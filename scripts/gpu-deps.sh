#!/usr/bin/env bash
# Downloads, on a machine WITH network access, what tests/gpu/run.sh installs on a GPU machine
# WITHOUT it, into .gpu-deps/ (gitignored):
#   - the pycuda source distribution (pycuda ships no wheels; run.sh builds it there against
#     that machine's CUDA toolkit and driver),
#   - wheels of pycuda's pure-Python and small binary dependencies (pytools -> platformdirs,
#     siphash24, typing-extensions; mako -> markupsafe) for CPython 3.12 manylinux x86_64,
#   - NVIDIA's TensorRT Python bindings (tensorrt-cu12-bindings 10.3, 10.13, 11.4, for the API
#     conformance test over stub libraries) and the pinned NVRTC wheel (the shipped-PTX check
#     and the run-time fallback compile), both for PY_VERSION,
#   - wheels the package imports that a bare CUDA image may lack (pydantic, pyzmq); numpy,
#     opencv-python-headless, pyyaml, onnx, onnxruntime, pytest and pytest-timeout are
#     expected there already (the H200 image has them) and are not carried.
# Usage: bash scripts/gpu-deps.sh [python]     (PY_VERSION=3.12 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-.venv/bin/python}}
PY_VERSION=${PY_VERSION:-3.12}
DEST=.gpu-deps
PYCUDA=${PYCUDA:-pycuda==2026.1}
mkdir -p "$DEST"

# Only pycuda from source: `--no-binary :all:` would also force its build requirements
# (numpy, setuptools) to build from source just to read pycuda's metadata.
"$PY" -m pip download -q --no-deps --no-binary pycuda -d "$DEST" "$PYCUDA"

platforms=()
for n in 17 27 28; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform any)
"$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
    --python-version "$PY_VERSION" "${platforms[@]}" -d "$DEST" \
    "pytools>=2024.1" "platformdirs>=2.2" "siphash24>=1.6" "typing-extensions>=4.5" \
    mako "markupsafe>=2" \
    "pydantic>=2.5" pydantic-core annotated-types typing-inspection "pyzmq>=25"

# The conformance test's bindings (run.sh copies them where scripts/trt_bindings.py looks) and
# NVRTC 12.6 (what the shipped PTX is built with); ~27 MB together.
mkdir -p "$DEST/trt-bindings"
for v in 10.3.0 10.13.0.35 11.4.0.106; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "$PY_VERSION" "${platforms[@]}" -d "$DEST/trt-bindings" \
        "tensorrt-cu12-bindings==$v"
done
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 -d "$DEST" \
    "nvidia-cuda-nvrtc-cu12==12.6.85"

# pydantic pins pydantic-core exactly: keep only the version it asks for.
want=$(unzip -p "$DEST"/pydantic-[0-9]*.whl '*/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==//p')
for f in "$DEST"/pydantic_core-*.whl; do
    [[ "$f" == *"pydantic_core-${want}-"* ]] || rm -f "$f"
done
ls -l "$DEST"
echo "gpu-deps: $(du -sh "$DEST" | cut -f1) in $DEST; on the GPU machine run: bash tests/gpu/run.sh"
