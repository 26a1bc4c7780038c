from __future__ import annotations

from pathlib import Path

import pytest

from lepton_edge.config import Override, load_config, parse_config, read_config_file
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


# Issue 15 item 6 (red on 5b6f079: every one of these was accepted; 99999 bound port 34463).
@pytest.mark.parametrize(("endpoint", "error"), [
    ("tcp://*:99999", "port 99999 is out of range 1..65535"),
    ("tcp://127.0.0.1:-1", "port '-1' is not a number"),
    ("tcp://host:abc", "port 'abc' is not a number"),
    ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
    ("tcp://:5556", "expected tcp://HOST:PORT"),
    ("tcp://a b:5556", "'a b' is not a host"),
    ("tcp://::1:5556", "write an IPv6 address in brackets"),
    ("ipc://", "the ipc:// path is empty"),
    ("ipc:///" + "x" * 120, "a Unix socket path takes at most 107"),
    ("inproc://", "the inproc:// name is empty"),
])
def test_bad_endpoints_are_refused_with_the_file_line(endpoint: str, error: str) -> None:
    text = BASE + f"publish:\n  endpoint: '{endpoint}'\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("c.yaml"))
    assert str(info.value).startswith("c.yaml:5: publish.endpoint: ")
    assert error in str(info.value)


@pytest.mark.parametrize("endpoint", ["tcp://*:5556", "tcp://127.0.0.1:1", "tcp://h.lan:65535",
                                      "tcp://127.0.0.1:0", "tcp://*:*", "tcp://[::1]:5556",
                                      "tcp://eth0:5556", "ipc:///run/x.sock", "ipc://@abstract",
                                      "inproc://det"])
def test_good_endpoints_pass(endpoint: str) -> None:
    cfg = parse_config(BASE + f"publish:\n  endpoint: '{endpoint}'\n")
    assert cfg.publish.endpoint == endpoint


def test_an_override_is_validated_like_the_file_and_names_its_flag() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE, Path("c.yaml"),
                     [Override("publish.endpoint", "tcp://*:99999", "--endpoint tcp://*:99999")])
    assert str(info.value) == ("--endpoint tcp://*:99999: publish.endpoint: 'tcp://*:99999': "
                               "port 99999 is out of range 1..65535")
    with pytest.raises(ConfigError, match=r"^override thresholds\.score: thresholds\.score"):
        parse_config(BASE, Path("c.yaml"), {"thresholds.score": 2})


# Issue 15 item 9: the README's own `ipc_mode: 0o660` (red on 5b6f079: "Input should be a valid
# integer"); YAML 1.1 reads 0o660 as a string and 0660 as an octal int.
@pytest.mark.parametrize(("written", "mode"), [("0o660", 0o660), ("0660", 0o660),
                                               ("'660'", 0o660), ("0o600", 0o600), ("432", 432)])
def test_ipc_mode_as_the_readme_writes_it(written: str, mode: int) -> None:
    cfg = parse_config(BASE + f"publish:\n  ipc_mode: {written}\n")
    assert cfg.publish.ipc_mode == mode


@pytest.mark.parametrize(("written", "error"), [
    ("660", "660 is decimal; write the mode as 0o660"),
    ("0o999", "expected an octal file mode such as 0o660"),
    ("0o7777", "Input should be less than or equal to 511"),
])
def test_bad_ipc_modes_name_the_line(written: str, error: str) -> None:
    with pytest.raises(ConfigError, match=f"^c.yaml:5: publish.ipc_mode: {error}"):
        parse_config(BASE + f"publish:\n  ipc_mode: {written}\n", Path("c.yaml"))


# Issue 15 item 9 (red on 5b6f079: UnicodeDecodeError traceback, exit 1).
def test_a_config_that_is_not_utf8_is_one_line_with_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"model: m\n# caf\xe9 camera\ncameras:\n  - {id: a, url: v.avi}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: not UTF-8 text (byte 0xe9); save the config as UTF-8"


def test_the_file_is_parsed_once_and_knows_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "publish:\n  hwm: 5\n")
    file = read_config_file(path)
    assert file.line(("publish", "hwm")) == 5 and file.line(("cameras", 0)) == 3
    assert file.line(("publish", "endpoint"), exact=True) is None
    assert file.where(("publish", "endpoint"), exact=True) == str(path)
    assert file.where(("publish", "hwm")) == f"{path}:5"


def test_empty_classes_list_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"c\.yaml:4: classes: Tuple should have at least 1"):
        parse_config(BASE + "classes: []\n", Path("c.yaml"))
