"""Checks of deploy/install.sh (through --dry-run: it changes nothing and needs no root) and of
the config presets it installs."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "install.sh"
PRESETS = ["security-camera", "factory-line"]
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    assert BASH is not None
    return subprocess.run(
        [BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def _plan(*args: str) -> list[list[str]]:
    """The commands a dry run would execute, each split back into its arguments."""
    proc = _run("--dry-run", *args)
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]


def _find(plan: list[list[str]], *prefix: str) -> list[list[str]]:
    return [cmd for cmd in plan if cmd[: len(prefix)] == list(prefix)]


def test_bash_syntax() -> None:
    assert BASH is not None
    proc = subprocess.run([BASH, "-n", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout


def test_strict_mode_and_executable() -> None:
    text = SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert SCRIPT.stat().st_mode & 0o111, "deploy/install.sh must be executable"


@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run_plan(preset: str) -> None:
    plan = _plan("--preset", preset)
    venv = "/opt/lepton-edge/venv"

    # The venv, without system site-packages unless --jetson.
    (venv_cmd,) = [cmd for cmd in plan if cmd[1:3] == ["-m", "venv"]]
    assert venv_cmd[-1] == venv
    assert "--system-site-packages" not in venv_cmd
    # pip installs the checkout (not editable) into that venv.
    (pip,) = _find(plan, f"{venv}/bin/pip", "install")
    assert any(arg == str(REPO) or arg.startswith(f"{REPO}[") for arg in pip), pip
    assert "-e" not in pip and "--editable" not in pip
    # The bundled artifact ends up in the state directory, owned by the service user.
    assert [
        "mv",
        "/var/lib/lepton-edge/engines/yolov8n.new",
        "/var/lib/lepton-edge/engines/yolov8n",
    ] in plan
    assert _find(plan, "cp", "-R", str(REPO / "engines" / "yolov8n"))
    assert _find(plan, "chown", "-R", "lepton-edge:lepton-edge")
    # The preset becomes the config (nothing is there on a test machine).
    (config,) = [cmd for cmd in plan if cmd and cmd[-1] == "/etc/lepton-edge/config.yaml"]
    assert config[0] == "install"
    assert config[-2] == str(REPO / "deploy" / f"{preset}.yaml")
    # Both units, then the next step for the operator.
    for unit in ("lepton-edge.service", "lepton-edge@.service"):
        assert [
            "install",
            "-m",
            "0644",
            str(REPO / "systemd" / unit),
            f"/etc/systemd/system/{unit}",
        ] in plan


def test_dry_run_orders_steps() -> None:
    proc = _run("--dry-run")
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    order = ["-m venv", "/bin/pip install", "engines/yolov8n", "config.yaml", "systemd/system"]
    positions = [out.index(marker) for marker in order]
    assert positions == sorted(positions), out
    assert "systemctl enable --now lepton-edge" in out.splitlines()[-2]


def test_dry_run_creates_user_or_reuses_it() -> None:
    plan = _plan()
    proc = _run("--dry-run")
    useradd = _find(plan, "useradd")
    if useradd:  # the usual case on a test machine
        (cmd,) = useradd
        assert cmd[-1] == "lepton-edge"
        assert "--system" in cmd
        assert cmd[cmd.index("--home-dir") + 1] == "/var/lib/lepton-edge"
        assert cmd[cmd.index("--shell") + 1] == "/usr/sbin/nologin"
    else:
        assert "user lepton-edge exists" in proc.stdout
    # video and render are created when missing (the unit's SupplementaryGroups= needs
    # both), and membership is appended, never replacing other groups.
    for cmd in _find(plan, "groupadd"):
        assert cmd[-1] in {"video", "render"} and "--system" in cmd
    for cmd in _find(plan, "usermod"):
        assert "--append" in cmd


def test_jetson_and_extras() -> None:
    plan = _plan("--jetson", "--extras", "openvino,metrics")
    (venv_cmd,) = [cmd for cmd in plan if cmd[1:3] == ["-m", "venv"]]
    assert "--system-site-packages" in venv_cmd
    (pip,) = _find(plan, "/opt/lepton-edge/venv/bin/pip", "install")
    assert f"{REPO}[openvino,metrics,http,analysis]" in pip
    assert "numpy<2" in pip


def _extras(*args: str) -> list[str]:
    """The extras of the planned pip install, in order ([] for a plain install)."""
    (pip,) = _find(_plan(*args), "/opt/lepton-edge/venv/bin/pip", "install")
    (target,) = [a for a in pip if a.startswith(str(REPO))]
    if target == str(REPO):
        return []
    assert target.startswith(f"{REPO}[") and target.endswith("]"), target
    return target[len(str(REPO)) + 1:-1].split(",")


def _pyproject_extras() -> set[str]:
    import tomllib

    with (REPO / "pyproject.toml").open("rb") as f:
        return set(tomllib.load(f)["project"]["optional-dependencies"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # The default install: the preset's metrics: needs prometheus_client (issue 15, item 4:
        # without it the service exited 2 on every start), and a CPU box wants OpenVINO.
        # The security preset's http: and its cameras' analysis keys (track, zones, ...) too.
        (["--preset", "security-camera", "--arch", "x86_64"],
         ["metrics", "http", "analysis", "openvino"]),
        (["--preset", "factory-line", "--arch", "aarch64"], ["metrics", "plc", "openvino"]),
        (["--arch", "armv7l"], ["metrics", "http", "analysis"]),
        (["--arch", "x86_64", "--no-openvino"], ["metrics", "http", "analysis"]),
        # TensorRT from JetPack instead
        (["--arch", "aarch64", "--jetson"], ["metrics", "http", "analysis"]),
        # The user's own come first, and nothing twice.
        (["--arch", "x86_64", "--extras", "compile,metrics"],
         ["compile", "metrics", "http", "analysis", "openvino"]),
    ],
)
def test_the_extras_follow_the_preset_and_the_machine(args: list[str],
                                                       expected: list[str]) -> None:
    assert _extras(*args) == expected


def test_dry_run_names_the_extras_and_why() -> None:
    proc = _run("--dry-run", "--preset", "security-camera", "--arch", "x86_64")
    assert proc.returncode == 0, proc.stderr
    preset = REPO / "deploy" / "security-camera.yaml"
    assert f"# extra metrics (metrics: in {preset})" in proc.stdout
    assert "# extra openvino (backend: auto on x86_64)" in proc.stdout
    assert "extras: metrics,http,analysis,openvino," in proc.stdout


@pytest.mark.parametrize("preset", PRESETS)
def test_every_extra_a_preset_needs_exists_in_pyproject(preset: str) -> None:
    for arch in ("x86_64", "aarch64"):
        assert set(_extras("--preset", preset, "--arch", arch)) <= _pyproject_extras()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("mqtt: {host: broker.local}\nhttp:\n  port: 8080\n", ["mqtt", "http"]),
        ("backend: openvino   # the key and its value\n", ["openvino"]),
        ("backend: \"onnxruntime\"\nmetrics: null\n", []),
        ("metrics:\n  port: 9108\n# mqtt: {host: x}\ncameras:\n  - {id: a, mqtt: 1}\n",
         ["metrics"]),
        ("backend: openvino\r\nhttp: {port: 8080}", ["openvino", "http"]),  # CRLF, no last \n
        ("cameras:\n  - id: a\n    zones: []\n    events: {labels: [person]}\n", ["analysis"]),
        ("cameras:\n  - id: line\n    inspect: {trigger: {software: {}}}\n", ["plc"]),
    ],
)
def test_the_key_to_extra_table(tmp_path: Path, body: str, expected: list[str]) -> None:
    """Top-level keys and camera keys; a commented-out key, or one set to null, adds nothing."""
    config = tmp_path / "own.yaml"
    config.write_text("model: /var/lib/lepton-edge/engines/yolov8n\n" + body)
    assert _extras("--config", str(config), "--no-openvino") == expected
    plan = _plan("--config", str(config))
    (install,) = [cmd for cmd in plan if cmd and cmd[-1] == "/etc/lepton-edge/config.yaml"]
    assert install[-2] == str(config)


def test_a_python_without_venv_support_is_refused_before_any_change(tmp_path: Path) -> None:
    """Debian's python3 has no ensurepip until python3-venv is installed: say so up front."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\ncase "$*" in\n  *ensurepip*) exit 1 ;;\n'
                    '  *version_info*) echo 3.11 ;;\nesac\n')
    fake.chmod(0o755)
    proc = _run("--dry-run", "--python", str(fake))
    assert proc.returncode == 2, proc.stdout
    assert "apt-get install python3-venv (or python3.11-venv)" in proc.stderr
    assert "+ " not in proc.stdout, "nothing may run (no user created) without a usable venv"
    proc = _run("--dry-run", "--python", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no such interpreter" in proc.stderr
    assert "+ " not in proc.stdout


def test_prefix_rewrites_unit_exec_start() -> None:
    proc = _run("--dry-run", "--prefix", "/srv/lepton")
    assert proc.returncode == 0, proc.stderr
    assert "+ /srv/lepton/venv/bin/pip install" in proc.stdout
    assert "s#/opt/lepton-edge/#/srv/lepton/#g" in proc.stdout
    assert "/opt/lepton-edge" not in proc.stdout.replace("s#/opt/lepton-edge/#", "")


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    before = sorted(p.name for p in (REPO / "deploy").iterdir())
    proc = _run("--dry-run", "--prefix", str(tmp_path / "prefix"))
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "prefix").exists()
    assert sorted(p.name for p in (REPO / "deploy").iterdir()) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "parking-lot"], "unknown preset 'parking-lot'"),
        (["--preset"], "--preset needs a value"),
        (["--extras", "openvino metrics"], "--extras must be a comma-separated list"),
        (["--extras", "x];rm -rf /"], "--extras must be a comma-separated list"),
        (["--prefix", "relative/dir"], "--prefix must be an absolute path"),
        (["--prefix", "/home/me/le"], "ProtectHome"),
        (["--frobnicate"], "unknown argument '--frobnicate'"),
        (["--config", "/nonexistent/config.yaml"], "--config /nonexistent/config.yaml: no such"),
        (["--arch"], "--arch needs a value"),
    ],
)
def test_bad_arguments(args: list[str], message: str) -> None:
    proc = _run("--dry-run", *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "+ " not in proc.stdout, "nothing may run after a bad argument"


def test_help() -> None:
    proc = _run("--help")
    assert proc.returncode == 0
    for flag in ("--preset", "--config", "--extras", "--jetson", "--no-openvino", "--arch",
                 "--prefix", "--dry-run"):
        assert flag in proc.stdout


# --- presets -------------------------------------------------------------------------------

def _preset(name: str) -> dict:
    data = yaml.safe_load((REPO / "deploy" / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("name", PRESETS)
def test_preset_schema(name: str) -> None:
    """Each preset passes the daemon's own validation (every key, zone, line and rule), and
    keeps what an installed box relies on."""
    from lepton_edge.config import load_config

    config = load_config(REPO / "deploy" / f"{name}.yaml")
    data = _preset(name)
    assert data["model"] == "/var/lib/lepton-edge/engines/yolov8n"
    assert config.threads >= 1 and config.publish.hwm > 0
    assert config.metrics is None or config.metrics.host == "127.0.0.1"
    assert config.http is None or config.http.host == "127.0.0.1"
    assert all(cam.mode == "live" for cam in config.cameras)


def test_security_camera_preset() -> None:
    data = _preset("security-camera")
    assert data["precision"] == "int8"
    assert set(data["classes"]) == {"person", "car", "truck", "bicycle", "motorcycle"}
    assert data["publish"]["endpoint"].startswith("tcp://")
    for cam in data["cameras"]:
        assert cam["url"].startswith("rtsp://")
        assert cam["mode"] == "live"
        assert cam["stall_timeout"] == 5.0


def test_factory_line_preset() -> None:
    factory = _preset("factory-line")
    security = _preset("security-camera")
    assert factory["precision"] in {"fp32", "int8"}
    # Lower threshold so that a part is not missed.
    assert factory["thresholds"]["score"] < security["thresholds"]["score"]
    assert factory["publish"]["endpoint"] == "ipc:///run/lepton-edge/det.sock"
    (cam,) = factory["cameras"]
    assert cam["url"] == "/dev/video0"


def test_factory_ipc_endpoint_is_the_units_runtime_directory() -> None:
    """The ipc socket must live in the directory the unit creates (ProtectSystem=strict)."""
    unit = (REPO / "systemd" / "lepton-edge.service").read_text()
    assert "\nRuntimeDirectory=lepton-edge\n" in unit
    endpoint = _preset("factory-line")["publish"]["endpoint"]
    assert Path(endpoint.removeprefix("ipc://")).parent == Path("/run/lepton-edge")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_commented(name: str) -> None:
    text = (REPO / "deploy" / f"{name}.yaml").read_text()
    assert sum(line.lstrip().startswith("#") for line in text.splitlines()) >= 10
