"""Every module imports and every CLI --help runs without the optional packages (tensorrt,
pycuda, openvino): a subprocess proves none of them gets imported on the CPU path."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, daemon_env, run_cli

COMMANDS = ["run", "subscribe", "bench", "keys", "compile", "eval", "diff", "report", "schema",
            "trigger", "verdicts", "gate"]


def test_cpu_path_imports_no_optional_runtime() -> None:
    code = (
        "import sys, importlib, pkgutil, lepton_edge\n"
        "skip = ('lepton_edge.backends.openvino',\n"
        "        'lepton_edge.compiler.openvino_int8',\n"
        "        'lepton_edge.__main__')\n"
        "for m in pkgutil.walk_packages(lepton_edge.__path__, 'lepton_edge.'):\n"
        "    if not m.name.startswith(skip): importlib.import_module(m.name)\n"
        "from lepton_edge.cli import build_parser; build_parser()\n"
        "bad = [m for m in ('tensorrt', 'pycuda', 'openvino', 'nncf') if m in sys.modules]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=daemon_env(), cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: lepton-edge" in result.stdout


def test_version() -> None:
    assert run_cli("--version").stdout.startswith("lepton-edge ")


def test_subscribe_times_out_cleanly() -> None:
    result = run_cli("subscribe", "tcp://127.0.0.1:9", "--timeout", "0.3", "--summary")
    assert result.returncode == 0
    assert "subscriber summary: 0 messages" in result.stdout
    json.dumps(result.stdout)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [ln for ln in lines if ln.startswith("lepton-edge: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# Issue 15 item 10 (red on 5b6f079: no "(default: ..." anywhere in help).
@pytest.mark.parametrize(("command", "shown"), [
    ("subscribe", "(default: 0)"), ("bench", "(default: 10.0)"), ("keys", "(default: server)"),
    ("run", "(default: 0)"),
])
def test_help_shows_the_defaults(command: str, shown: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0 and shown in " ".join(result.stdout.split()), result.stdout


# Issue 15 item 10 (red on 5b6f079: "unrecognized arguments: --log-level warning", exit 2).
def test_log_level_is_accepted_after_the_subcommand() -> None:
    result = run_cli("subscribe", "tcp://127.0.0.1:9", "--timeout", "0.2", "--log-level", "error")
    assert result.returncode == 0, result.stderr
    assert run_cli("keys", "--help", "--log-level", "debug").returncode == 0


# Issue 15 item 10 (red on 5b6f079: "deploy/bench.yaml" relative to the working directory, so
# `lepton-edge bench` outside the checkout failed with "cannot read config").
def test_bench_config_default_does_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    code = ("from lepton_edge.cli import build_parser\n"
            "print(build_parser().parse_args(['bench']).config)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=daemon_env(), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    default = Path(out.stdout.strip())
    assert default.is_absolute() and default.samefile(REPO / "deploy" / "bench.yaml")


def test_bench_with_its_default_config_runs_from_another_directory(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lepton_edge", "bench", "--log-level", "warning",
         "--backend", "onnxruntime:fp32", "--frames", "2", "--bare-seconds", "0.2", "--json"],
        capture_output=True, text=True, env=daemon_env(), cwd=tmp_path, timeout=180)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frames"] == 2 and report["backend"] == "onnxruntime"
    # --log-level after the subcommand beats the config's log_level (info): no INFO lines
    assert " INFO " not in result.stderr, result.stderr


# Issue 15 item 9 (red on 5b6f079: an ImportError traceback halfway through, and `compile`
# left engines/NAME/ behind with the copied model in it).
_BLOCK = ("import sys\n"
          "for m in ('tqdm', 'faster_coco_eval', 'sympy'): sys.modules[m] = None\n"
          "from lepton_edge.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def test_compile_without_the_compile_extra_is_one_line_and_leaves_nothing(
        tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK, "compile", str(REPO / "engines/yolov8n/model.onnx"),
         "--calib", str(REPO / "samples/images"), "--name", "partial", "--out", str(tmp_path),
         "--no-openvino"],
        capture_output=True, text=True, env=daemon_env(), cwd=tmp_path, timeout=300)
    assert out.returncode == 6, out.stderr
    line = _one_error_line(out)
    assert "compile needs the compile extra" in line
    assert "pip install 'lepton-edge[compile]'" in line
    assert not (tmp_path / "partial").exists()


def test_eval_without_the_compile_extra_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK, "eval", str(REPO / "engines/yolov8n"),
         "--data", str(REPO / "samples/images")],
        capture_output=True, text=True, env=daemon_env(), cwd=tmp_path, timeout=300)
    assert out.returncode == 6, out.stderr
    assert "pip install 'lepton-edge[compile]'" in _one_error_line(out)


def test_eval_refuses_a_family_without_a_decoder_before_reading_frames(tmp_path: Path) -> None:
    import shutil

    import yaml

    art = tmp_path / "art"
    shutil.copytree(REPO / "engines/yolov8n", art,
                    ignore=shutil.ignore_patterns("*.int8*", "openvino*", "cache"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    manifest.update(family="yolov5", models={"fp32": manifest["models"]["fp32"]},
                    files={"model.onnx": manifest["files"]["model.onnx"]})
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    result = run_cli("eval", str(art), "--data", str(tmp_path / "no-such-frames"))
    assert result.returncode == 3, result.stderr
    assert "model family 'yolov5' has no decoder here" in _one_error_line(result)
