"""deploy/JETSON.md says what the code does about plans and compilers (issue 14): every part of
the plan key, the L4T reduction, the cache files, the ahead-of-time command's flags, and no
compiler at run time."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from lepton_edge.backends.tensorrt.engine_cache import PlanKey, l4t_release
from lepton_edge.backends.tensorrt.plan import timing_cache_path

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "deploy" / "JETSON.md").read_text()
SECTION = DOC.split("## Engine cache and the L4T release", 1)[1].split("\n## ", 1)[0]

# How the doc names each field of the key. A new field fails the first assertion until the
# doc (and this table) says what it is.
PHRASES = {
    "onnx_sha256": "sha256 of the ONNX model's bytes",
    "settings": "build settings",
    "recipe": "build recipe",
    "tensorrt_version": "TensorRT version",
    "gpu_name": "GPU name",
    "compute_capability": "compute capability",
    "l4t_release": "L4T release",
}


def test_every_part_of_the_plan_key_is_described():
    assert set(PHRASES) == {f.name for f in dataclasses.fields(PlanKey)}
    for field, phrase in PHRASES.items():
        assert phrase in SECTION, f"JETSON.md does not describe plan key field {field}"


def test_the_l4t_example_is_what_the_code_reads(tmp_path):
    line, reduced = re.search(r"\(`(# R\d+[^`]*)` gives `([^`]+)`\)", SECTION).groups()
    release = tmp_path / "nv_tegra_release"
    release.write_text(line.replace("...", "BOARD: generic") + "\n")
    assert l4t_release(release) == reduced


def test_the_cache_files_are_the_ones_the_code_writes(tmp_path):
    key = PlanKey("a" * 64, {}, 1, "10.3.0", "Orin", "8.7")
    assert f"`<key>{timing_cache_path(tmp_path, key).suffix}`" in SECTION
    for suffix in (".plan", ".json"):
        assert f"`<key>{suffix}`" in SECTION


def test_the_ahead_of_time_command_uses_flags_compile_has():
    from lepton_edge.cli import build_parser

    command = SECTION.split("```sh", 1)[1].split("```", 1)[0]
    flags = set(re.findall(r"(--[a-z-]+)", command))
    assert {"--plan", "--state-dir", "--input-size"} <= flags
    compile_parser = build_parser()._subparsers._group_actions[0].choices["compile"]
    known = {o for a in compile_parser._actions for o in a.option_strings}
    assert flags <= known, f"JETSON.md uses flags compile does not have: {flags - known}"


def test_nvcc_is_needed_only_to_build_pycuda():
    assert "the daemon never runs nvcc" in DOC
    rows = [line for line in DOC.splitlines() if "nvcc" in line and line.startswith("|")]
    assert rows and all("only to build pycuda" in row for row in rows)
