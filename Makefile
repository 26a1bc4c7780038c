# The README's two commands: `make run` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Extras for the bench/test machine; a camera installs only what it runs (deploy/install.sh).
EXTRAS ?= compile,openvino,metrics,report,analysis,mqtt,http,plc,dev
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
comma := ,
CONFIG ?= deploy/bench.yaml
ENDPOINT ?= tcp://127.0.0.1:5556

.PHONY: venv run test test-slow lint faults bench engines system-deps gpu-deps clean \
	trt-bindings kernels node-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(STAMP)

# The main job on the bundled sample: the daemon replays samples/vtest.avi through YOLOv8n on the
# CPU while a subscriber in another process prints what arrives over ZeroMQ, then a summary.
run: venv
	@set -e; \
	$(BIN)/lepton-edge subscribe $(ENDPOINT) --until-stop --summary & sub=$$!; \
	trap 'kill $$sub 2>/dev/null || true' EXIT; \
	$(BIN)/lepton-edge run --config $(CONFIG) --endpoint tcp://127.0.0.1:5556 --wait-subscribers 1; \
	wait $$sub

system-deps:
	@bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check lepton_edge tests bench

test: venv system-deps node-deps lint trt-bindings
	$(BIN)/python -m pytest -q -ra -m "not slow"

# NVIDIA's TensorRT Python bindings (10.3, 10.13, 11.4; ~1.2 MB wheels) and the stub libraries
# they import over, into .cache/trt-bindings/ for the API conformance test. Without the registry
# it says so and the test skips with that reason.
trt-bindings: venv
	$(BIN)/python scripts/trt_bindings.py

# Rebuilds the shipped letterbox PTX (sm_72, sm_87, sm_90) from letterbox.cu with the pinned
# NVRTC (dev extra); a test checks the committed PTX equals a fresh build.
# The `zeromq` npm package for the README's Node.js example test, into .node/ (skips without npm).
node-deps:
	@bash scripts/install-node-deps.sh

kernels: venv
	$(BIN)/python -m lepton_edge.backends.tensorrt.cuda.kernels

# Minutes-long checks (full-clip float vs INT8 diffs against the gate); .ci/run runs them too.
test-slow: venv system-deps
	$(BIN)/python -m pytest -q -ra -m slow

faults: venv system-deps
	$(BIN)/python -m pytest -q -ra tests/faults

# The pipeline against bare inference, float and INT8 on ONNX Runtime and OpenVINO, one run.
bench: venv
	$(BIN)/lepton-edge bench --config deploy/bench.yaml --backend onnxruntime:fp32 \
		--backend onnxruntime:int8 --backend openvino:bf16 --backend openvino:int8

# Rebuilds the committed artifact of the bundled model from the repo's calibration set. The floor
# applies to mAP50 over the classes with >= 20 reference boxes; an encoding below it is written
# and marked below_floor in the manifest (the daemon warns before running it), not a failure.
engines: venv
	$(BIN)/lepton-edge compile engines/yolov8n/model.onnx --calib calibration/yolov8n.yaml --name yolov8n --floor 0.95 --max-float-steps 0 --mark-below-floor

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache/trt-bindings

# Downloads pycuda's source distribution (and wheels it needs) into .gpu-deps/ for a GPU box
# without network: then `bash tests/gpu/run.sh` there.
gpu-deps:
	bash scripts/gpu-deps.sh
