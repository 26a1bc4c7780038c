from __future__ import annotations

from pathlib import Path

import pytest

from lepton_edge.config import load_config, parse_config
from lepton_edge.errors import ConfigError

BASE = "model: m\ncameras:\n  - {id: a, url: v.avi}\n"


@pytest.mark.parametrize(("text", "error"), [
    ("model: m\ncameras:\n  - id: a\n    url: v.avi\n  - id: b\n",
     "c.yaml:5: cameras[1].url: required"),
    ("model: m\ncameras:\n  - id: a\n    url: v.avi\n    mdoe: bench\n",
     "c.yaml:5: cameras[0].mdoe: unknown key"),
    ("model: m\nprecision: int4\ncameras:\n  - {id: a, url: v.avi}\n",
     "c.yaml:2: precision: Input should be 'int8', 'fp16', 'bf16' or 'fp32' (got 'int4')"),
    ("model: m\nthresholds: {score: 1.5}\n" + BASE[9:], "thresholds.score: Input should be less"),
    ("model: m\ncameras: []\n", "cameras: Tuple should have at least 1 item"),
    ("cameras:\n  - {id: a, url: v.avi}\n", "model: required"),
    ("model: m\ncameras:\n  - {id: a, url: v.avi}\n  - {id: a, url: w.avi}\n",
     "cameras[1].id 'a' is already used by cameras[0]"),
    ("model: [m\n", "not valid YAML"),
    ("- just\n- a list\n", "the config must be a mapping"),
    ("model: m\ninput_size: 650\n" + BASE[9:], "input_size: Input should be a multiple of 32"),
    ("model: m\npublish: {endpoint: 'http://x'}\n" + BASE[9:],
     "publish.endpoint: must start with tcp://, ipc:// or inproc://"),
    ("model: m\ncameras:\n  - {id: a, url: v.avi, loop: true}\n",
     "loop: only meaningful with mode: replay or bench"),
    ("model: m\nbackend: tensorflow\n" + BASE[9:], "backend: must be one of auto"),
    ("model: m\ncameras:\n  - {id: 'a b', url: v.avi}\n", "cameras[0].id: String should match"),
    ("model: m\ncameras:\n  - {id: a, url: v.avi, reconnect: {initial: 5, max: 1}}\n",
     "max (1.0) must be >= initial (5.0)"),
    ("model: m\nthreads: -1\n" + BASE[9:], "threads: Input should be greater than or equal to 0"),
])
def test_errors_name_the_file_line_and_field(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("c.yaml"))
    assert error in str(info.value)
    assert "\n" not in str(info.value)


def test_defaults_and_relative_paths() -> None:
    cfg = parse_config(BASE, Path("deploy/c.yaml"))
    assert cfg.backend == "auto" and cfg.precision == "fp32" and cfg.thresholds.score == 0.35
    assert cfg.cameras[0].mode == "live" and cfg.publish.hwm == 100
    assert cfg.resolve(cfg.model) == Path("deploy/m")
    assert cfg.camera_url(cfg.cameras[0]) == "deploy/v.avi"


@pytest.mark.parametrize("url", ["rtsp://10.0.0.1/s", "0", "/dev/video0", "/abs/v.mp4",
                                 "v4l2src ! videoconvert ! appsink"])
def test_urls_that_are_not_relative_files_are_kept(url: str) -> None:
    cfg = parse_config(f"model: m\ncameras:\n  - id: a\n    url: '{url}'\n", Path("d/c.yaml"))
    assert cfg.camera_url(cfg.cameras[0]) == url


def test_plugin_backend_name_is_accepted() -> None:
    assert parse_config("model: m\nbackend: my.pkg:Thing\n" + BASE[9:]).backend == "my.pkg:Thing"


def test_backend_options_reach_the_backend_as_strings() -> None:
    from lepton_edge.daemon import backend_options

    cfg = parse_config("model: m\nbackend_options: {requests: 2, hint: latency}\n" + BASE[9:])
    assert backend_options(cfg).extra == {"requests": "2", "hint": "latency"}
    with pytest.raises(ConfigError, match=r"backend_options\.hint"):
        parse_config("model: m\nbackend_options: {hint: [a]}\n" + BASE[9:])


def test_config_is_frozen() -> None:
    cfg = parse_config(BASE)
    with pytest.raises(Exception, match="frozen"):
        cfg.model = "x"  # type: ignore[misc]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "none.yaml")


def test_overrides_apply_before_validation() -> None:
    cfg = parse_config(BASE, overrides={"thresholds.score": 0.5, "precision": "int8"})
    assert cfg.thresholds.score == 0.5 and cfg.precision == "int8"
