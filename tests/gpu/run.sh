#!/usr/bin/env bash
# GPU checks on a machine with an NVIDIA GPU, the CUDA toolkit (nvcc) and no network:
#   1. builds pycuda from .gpu-deps/pycuda-*.tar.gz (made beforehand, with network, by
#      scripts/gpu-deps.sh) into a throwaway folder put on PYTHONPATH. Not a new venv with
#      --system-site-packages: when python3 is itself a venv (the H200 image's is), such a venv
#      sees the base interpreter's packages, not numpy/cv2/pytest of python3's venv.
#   2. runs, in one pytest run, the GPU tests (the shipped PTX loaded by the real driver with
#      module_from_buffer, no nvcc; kernel vs CPU letterbox, mapped vs pinned, buffer reuse;
#      the TensorRT ones run where tensorrt is importable and skip with the reason otherwise)
#      and everything of tests/backends/tensorrt that runs anywhere: the API conformance test
#      over NVIDIA's bindings and stub libraries, NVRTC compiling letterbox.cu for sm_72/87/90
#      against the shipped PTX, the runner over stand-ins, plan keys and the engine cache,
#   3. prints the letterbox microbenchmark (kernel vs CPU, same run).
# nvcc is needed here only to build pycuda; the package itself never calls it.
# With the session's device tool: run(command="bash tests/gpu/run.sh", carry=[".gpu-deps"]).
# PYTHON picks the interpreter (default python3); KEEP_BUILD=1 keeps the build folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEPS=.gpu-deps
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

die() { echo "gpu/run.sh: $*" >&2; exit 2; }

sdist=$(find "$DEPS" -maxdepth 1 -name "pycuda-*.tar.gz" 2>/dev/null | head -n1)
[[ -n "$sdist" ]] || die "no $DEPS/pycuda-*.tar.gz; run scripts/gpu-deps.sh on a machine with network first"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true

nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true)
[[ -n "$nvcc" ]] || die "nvcc not found: pycuda builds and the kernel compiles with the CUDA toolkit"
# The toolkit root: nvcc may be a wrapper script, so ask nvcc itself (its TOP), then look around.
top=$("$nvcc" --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1 || true)
cuda_root=""
for cand in "$top" "$(dirname "$(dirname "$(readlink -f "$nvcc")")")" /usr/local/cuda \
            /usr/local/cuda-*; do
    if [[ -n "$cand" && -f "$cand/include/cuda.h" ]]; then
        cuda_root=$(readlink -f "$cand"); break
    fi
done
[[ -n "$cuda_root" ]] || die "no CUDA toolkit with include/cuda.h found (nvcc is $nvcc)"
PATH="$cuda_root/bin:$PATH"
export PATH
"$PY" - <<'PYEOF' || die "Python headers (Python.h) are missing for $PY: pycuda cannot build"
import os, sysconfig
raise SystemExit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PYEOF

work=$(mktemp -d)
[[ "${KEEP_BUILD:-0}" == 1 ]] || trap 'rm -rf "$work"' EXIT
# pycuda links -lcuda: the driver's libcuda.so.1 (or the toolkit's stub) under the plain name.
mkdir -p "$work/lib"
libcuda=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {print $NF; exit}')
for cand in "$libcuda" /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so.1 \
            "$cuda_root/lib64/stubs/libcuda.so" "$cuda_root/lib/stubs/libcuda.so"; do
    if [[ -n "$cand" && -e "$cand" ]]; then ln -sf "$cand" "$work/lib/libcuda.so"; break; fi
done
[[ -e "$work/lib/libcuda.so" ]] || die "no libcuda.so.1 (driver) or stub found to link pycuda"

tar xzf "$sdist" -C "$work"
src=$(find "$work" -maxdepth 1 -type d -name "pycuda-*" | head -n1)
(cd "$src" && "$PY" configure.py --cuda-root="$cuda_root" --no-cuda-enable-curand \
    --cudadrv-lib-dir="$work/lib,$cuda_root/lib64,$cuda_root/lib64/stubs" >/dev/null)
echo "gpu/run.sh: building pycuda ($(basename "$sdist")) against $cuda_root"
t0=$(date +%s)
site="$work/site"
"$PY" -m pip install -q --no-index --find-links "$DEPS" --no-build-isolation --no-compile \
    --target "$site" "$src" || die "pycuda did not build (see the compiler output above)"
echo "gpu/run.sh: pycuda built in $(( $(date +%s) - t0 )) s"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
# The package's own imports, where the image lacks them (wheels from scripts/gpu-deps.sh).
if ! "$PY" -c "import pydantic, zmq" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --find-links "$DEPS" --no-compile --target "$work/extra" \
        pydantic pyzmq
    export PYTHONPATH="$PYTHONPATH:$work/extra"
fi
"$PY" -c "import pycuda.autoprimaryctx, pycuda.driver as d; print('pycuda', d.get_version(), 'driver', d.get_driver_version())"
# NVRTC 12.6 (the shipped PTX's compiler) and the TensorRT bindings, from scripts/gpu-deps.sh.
if compgen -G "$DEPS/nvidia_cuda_nvrtc_cu12-*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" \
        "$DEPS"/nvidia_cuda_nvrtc_cu12-*.whl
fi
mkdir -p .cache/trt-bindings/wheels
cp -n "$DEPS"/trt-bindings/*.whl .cache/trt-bindings/wheels/ 2>/dev/null || \
    echo "gpu/run.sh: no $DEPS/trt-bindings wheels; the conformance test will skip"

status=0
"$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu tests/backends/tensorrt || status=$?
"$PY" tests/gpu/bench_letterbox.py || status=$?
exit $status
