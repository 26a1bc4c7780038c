"""Every module imports and every CLI --help runs without the optional packages (tensorrt,
pycuda, openvino): a subprocess proves none of them gets imported on the CPU path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import REPO, daemon_env, run_cli

COMMANDS = ["run", "subscribe", "bench", "keys", "compile", "eval", "diff", "report"]


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
