"""Checks of systemd/lepton-edge.service and systemd/lepton-edge@.service.

Two kinds of check:

* The directives that matter (Type=notify, the watchdog, restart policy, hardening, device
  allow list) are asserted on the parsed unit files, table-driven.
* ``systemd-analyze verify`` parses the files with systemd's own parser and resolves their
  dependencies. It needs the executables a unit names to exist, so it runs with
  ``--root=ROOT`` on a throw-away tree: the unit files are copied byte for byte into
  ROOT/etc/systemd/system, the host's own units are copied to ROOT/usr/lib/systemd/system
  (for multi-user.target, network-online.target, ...), and the two executables the units
  name (/opt/lepton-edge/venv/bin/lepton-edge and /bin/kill) are stand-in scripts. That is
  the only deviation from a real install. ``--man=no`` because the units name no man pages
  to look up. User=/Group= are not checked by verify (only at start), so the service user
  need not exist. verify exits 0 even for unknown keys or unparsable values (it only logs
  them), so the test also requires that it prints nothing about our units.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT_DIR = REPO / "systemd"
MAIN = "lepton-edge.service"
TEMPLATE = "lepton-edge@.service"
UNITS = [MAIN, TEMPLATE]
EXE = "/opt/lepton-edge/venv/bin/lepton-edge"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Parse a unit file into {section: {key: [values in order]}}.

    configparser cannot be used as is: systemd keys repeat (DeviceAllow=, Environment=) and an
    empty assignment (CapabilityBoundingSet=) is meaningful.
    """
    sections: Unit = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"line {lineno}: bad section header {line!r}"
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"line {lineno}: assignment outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"line {lineno}: not KEY=value: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module", params=UNITS)
def unit_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def unit(unit_name: str) -> Unit:
    return parse_unit((UNIT_DIR / unit_name).read_text())


def _one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, f"[{section}] {key}= is missing"
    assert len(values) == 1, f"[{section}] {key}= is set {len(values)} times: {values}"
    return values[0]


@pytest.mark.parametrize(
    ("section", "key", "expected"),
    [
        ("Unit", "StartLimitIntervalSec", "600"),
        ("Unit", "StartLimitBurst", "5"),
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "WatchdogSec", "30"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartSec", "5"),
        ("Service", "TimeoutStartSec", "600"),
        ("Service", "TimeoutStopSec", "20"),
        ("Service", "KillSignal", "SIGTERM"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "User", "lepton-edge"),
        ("Service", "Group", "lepton-edge"),
        ("Service", "SupplementaryGroups", "video render"),
        ("Service", "StateDirectory", "lepton-edge"),
        ("Service", "ConfigurationDirectory", "lepton-edge"),
        ("Service", "NoNewPrivileges", "yes"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectHome", "yes"),
        ("Service", "PrivateTmp", "yes"),
        ("Service", "ProtectKernelTunables", "yes"),
        ("Service", "ProtectKernelModules", "yes"),
        ("Service", "ProtectKernelLogs", "yes"),
        ("Service", "ProtectControlGroups", "yes"),
        ("Service", "RestrictNamespaces", "yes"),
        ("Service", "LockPersonality", "yes"),
        ("Service", "RestrictRealtime", "yes"),
        ("Service", "DevicePolicy", "closed"),
        ("Service", "CapabilityBoundingSet", ""),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_directive(unit: Unit, section: str, key: str, expected: str) -> None:
    assert _one(unit, section, key) == expected


def test_address_families(unit: Unit) -> None:
    families = _one(unit, "Service", "RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"]


def test_environment(unit: Unit) -> None:
    env = " ".join(unit["Service"].get("Environment", [])).split()
    assert "PYTHONUNBUFFERED=1" in env


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("MemoryDenyWriteExecute", "CUDA/NVRTC JIT, TensorRT and OpenVINO need W+X memory"),
        ("PrivateDevices", "it hides the cameras and accelerators"),
        ("DynamicUser", "device access goes through the static user's groups"),
    ],
)
def test_directive_absent(unit: Unit, key: str, why: str) -> None:
    assert key not in unit["Service"], f"{key}= must not be set: {why}"


def test_memory_deny_write_execute_is_explained(unit_name: str) -> None:
    text = (UNIT_DIR / unit_name).read_text()
    assert re.search(r"^#.*MemoryDenyWriteExecute=.*NOT set", text, re.MULTILINE)


def test_device_allow_list(unit: Unit) -> None:
    allowed = {}
    for value in unit["Service"]["DeviceAllow"]:
        node, _, access = value.partition(" ")
        # Read/write only: no "m" (mknod) for anything.
        assert access == "rw", f"DeviceAllow={value}: expected 'rw' access"
        allowed[node] = access
        assert node.startswith(("char-", "/dev/")), f"DeviceAllow={value}"
        # Globs work for char-/block- groups only; a glob in a path would never match.
        assert node.startswith("char-") or not set(node) & set("*?["), f"DeviceAllow={value}"
    for required in (
        "char-video4linux",  # V4L2 cameras
        "char-nvidia*",  # discrete NVIDIA GPUs
        "/dev/dri/renderD128",  # render nodes (OpenVINO GPU, JetPack 6)
        "/dev/nvmap",  # Jetson
        "/dev/nvhost-ctrl",
        "/dev/nvhost-ctrl-gpu",
        "/dev/nvhost-gpu",
        "/dev/nvhost-as-gpu",
    ):
        assert required in allowed, f"DeviceAllow={required} rw is missing"
    assert "char-drm" not in allowed, "render nodes only, not the KMS card nodes"
    assert not any(n.startswith("/dev/dri/card") for n in allowed)


def test_exec_start(unit_name: str, unit: Unit) -> None:
    config = "/etc/lepton-edge/%i.yaml" if "@" in unit_name else "/etc/lepton-edge/config.yaml"
    assert _one(unit, "Service", "ExecStart") == f"{EXE} run --config {config}"


def test_template_mirrors_main_unit() -> None:
    """The template differs from the main unit in the per-instance settings only."""
    main = parse_unit((UNIT_DIR / MAIN).read_text())
    template = parse_unit((UNIT_DIR / TEMPLATE).read_text())
    per_instance = {
        ("Unit", "Description"),
        ("Service", "ExecStart"),
        ("Service", "RuntimeDirectory"),
    }
    assert main.keys() == template.keys()
    for section in main:
        for key in main[section].keys() | template[section].keys():
            if (section, key) in per_instance:
                continue
            assert main[section].get(key) == template[section].get(key), f"[{section}] {key}="
    assert _one(template, "Service", "RuntimeDirectory") == "lepton-edge/%i"
    assert "%i" in _one(template, "Unit", "Description")


# --- systemd-analyze -----------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)"
)


def _host_unit_dir() -> Path | None:
    for candidate in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        if (Path(candidate) / "multi-user.target").exists():
            return Path(candidate)
    return None


def _stub(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    host_units = _host_unit_dir()
    if host_units is None:
        pytest.skip("no systemd unit directory with multi-user.target on this host")
    root = tmp_path_factory.mktemp("root")
    shutil.copytree(host_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in UNITS:
        shutil.copyfile(UNIT_DIR / name, root / "etc/systemd/system" / name)
    _stub(root / EXE.lstrip("/"))
    _stub(root / "bin/kill")
    return root


def _analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _verify(root: Path, unit: str) -> tuple[int, list[str]]:
    proc = _analyze(root, "verify", "--man=no", unit)
    output = (proc.stdout + proc.stderr).splitlines()
    return proc.returncode, [line for line in output if "lepton-edge" in line]


@needs_analyze
@pytest.mark.parametrize("unit", [MAIN, "lepton-edge@gate-1.service"])
def test_systemd_analyze_verify(verify_root: Path, unit: str) -> None:
    rc, complaints = _verify(verify_root, unit)
    assert rc == 0 and not complaints, "\n".join(complaints)


@needs_analyze
def test_verify_harness_catches_errors(verify_root: Path, tmp_path: Path) -> None:
    """A broken unit must fail the check above: guards against a harness that sees nothing."""
    broken = (UNIT_DIR / MAIN).read_text().replace("WatchdogSec=30", "WatchdogSec=thirty")
    broken += "NoSuchDirective=1\n"
    root = tmp_path / "root"
    shutil.copytree(verify_root, root, symlinks=True)
    (root / "etc/systemd/system" / MAIN).write_text(broken)
    _, complaints = _verify(root, MAIN)
    text = "\n".join(complaints)
    assert "thirty" in text
    assert "NoSuchDirective" in text


@needs_analyze
@pytest.mark.parametrize("unit", [MAIN, "lepton-edge@gate-1.service"])
def test_security_exposure(verify_root: Path, unit: str) -> None:
    """systemd's own hardening score stays below 5.0 ("MEDIUM"); it is 3.5 with systemd 252."""
    proc = _analyze(verify_root, "security", "--offline=yes", "--threshold=50", "--no-pager", unit)
    if "--offline" in proc.stderr and "unrecognized" in proc.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr
    assert proc.returncode == 0, f"exposure {match.group(1)} is above 5.0"
