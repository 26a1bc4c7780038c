"""The resolved run: the config read once with its overrides, the artifact and the backend's own
options checked against it before anything opens, each error one line naming file:line or the
flag. Real files: the bundled artifact (copied and edited where a test needs another manifest),
configs in tmp, real CURVE keys from `lepton-edge keys`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from lepton_edge.backends.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeOptions
from lepton_edge.backends.openvino import OpenVinoOptions
from lepton_edge.config import Override
from lepton_edge.errors import ConfigError, ModelError
from lepton_edge.run import ResolvedRun, RunOptions, resolve_run
from tests.conftest import ENGINE, write_config


def _fp32_artifact(tmp_path: Path, **manifest_changes: object) -> Path:
    """A copy of the bundled artifact's float model with its manifest edited."""
    art = tmp_path / "art"
    shutil.copytree(ENGINE, art, ignore=shutil.ignore_patterns("*.int8*", "openvino*", "cache"))
    manifest = yaml.safe_load((art / "manifest.yaml").read_text())
    manifest["models"] = {"fp32": manifest["models"]["fp32"]}
    manifest["files"] = {"model.onnx": manifest["files"]["model.onnx"]}
    manifest.update(manifest_changes)
    (art / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return art


def _line(path: Path, text: str) -> int:
    return next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if text in ln)


def test_a_run_is_one_frozen_value_with_everything_resolved(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", classes=["person", "car"])
    run = resolve_run(cfg, [Override("thresholds.score", 0.5, "--score")],
                      options=RunOptions(wait_subscribers=1))
    assert isinstance(run, ResolvedRun) and run.source == cfg
    assert run.backend == "onnxruntime" and run.artifact.name == "yolov8n"
    assert run.decode.class_ids == (0, 2) and run.decode.score == 0.5
    assert isinstance(run.backend_options.settings, OnnxRuntimeOptions)
    assert run.backend_options.state_dir == tmp_path / "state"
    assert run.options.wait_subscribers == 1
    with pytest.raises(AttributeError):
        run.backend = "x"  # type: ignore[misc]
    # the backend reads its own typed options from the run
    assert isinstance(OnnxRuntimeBackend(run.artifact, run.backend_options).settings,
                      OnnxRuntimeOptions)


def test_reread_goes_through_the_same_checks_and_keeps_the_artifact(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    run = resolve_run(cfg, [Override("log_level", "warning", "--log-level")])
    again = run.reread()
    assert again.artifact is run.artifact and again.config.log_level == "warning"
    write_config(cfg, classes=["persn"])
    with pytest.raises(ConfigError, match=r"classes\[0\]: 'persn' not among"):
        run.reread()


# Issue 12 item 1: options are typed in the backend's module; a wrong one names the file line
# (red on 5b6f079: "backend_options: openvino does not know streams" with no file or line, and
# only once the backend was constructed).
@pytest.mark.parametrize(("options", "error"), [
    ({"streams": 2}, "backend_options.streams: openvino does not read this option (it reads: "
                     "hint, requests, input, pinning)"),
    ({"hint": "fast"}, "backend_options.hint: Input should be 'throughput' or 'latency'"),
    ({"requests": 0}, "backend_options.requests: Input should be greater than or equal to 1"),
    ({"input": "nv12"}, "backend_options.input: Input should be 'pixels' or 'tensor'"),
])
def test_a_wrong_backend_option_names_the_file_line(tmp_path: Path, options: dict,
                                                    error: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", backend="openvino", backend_options=options)
    with pytest.raises(ConfigError) as info:
        resolve_run(cfg)
    key = next(iter(options))
    assert str(info.value).startswith(f"{cfg}:{_line(cfg, f'{key}:')}: {error}")


def test_backend_options_are_typed_for_the_backend(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", backend="openvino",
                       backend_options={"hint": "LATENCY", "requests": "3"})
    settings = resolve_run(cfg).backend_options.settings
    assert settings == OpenVinoOptions(hint="latency", requests=3, input="pixels")


def test_onnxruntime_reads_no_options(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", backend_options={"requests": 2})
    with pytest.raises(ConfigError, match=r":\d+: backend_options\.requests: onnxruntime does "
                                          r"not read this option \(it reads: none\)"):
        resolve_run(cfg)


# Issue 12 item 1 (red on 5b6f079: the daemon loaded the backend and ran the warm-up, then
# Pipeline() raised a bare ValueError traceback).
def test_a_family_without_a_decoder_is_refused_before_anything_opens(tmp_path: Path) -> None:
    art = _fp32_artifact(tmp_path, family="yolov5")
    cfg = write_config(tmp_path / "c.yaml", model=str(art))
    with pytest.raises(ModelError, match=r"manifest\.yaml: model family 'yolov5' has no "
                                         r"decoder here \(known: yolov8\)"):
        resolve_run(cfg)


def test_an_input_the_letterbox_cannot_feed_is_refused(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ENGINE / "manifest.yaml").read_text())
    art = _fp32_artifact(tmp_path, input={**manifest["input"], "layout": "NHWC", "color": "BGR"})
    cfg = write_config(tmp_path / "c.yaml", model=str(art))
    with pytest.raises(ModelError, match=r"cannot feed layout NHWC .*, color BGR"):
        resolve_run(cfg)


def test_input_size_must_fit_the_models_stride(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ENGINE / "manifest.yaml").read_text())
    art = _fp32_artifact(tmp_path, input={**manifest["input"], "stride": 64})
    cfg = write_config(tmp_path / "c.yaml", model=str(art), input_size=608)
    with pytest.raises(ConfigError, match=rf"^{cfg}:\d+: input_size: 608 is not a multiple of "
                                          rf"model yolov8n's stride 64"):
        resolve_run(cfg)


# Issue 15 item 9 (red on 5b6f079: "classes: 'persn' not among ..." named no file or line).
def test_an_unknown_class_names_its_line_and_the_nearest_names(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    write_config(cfg)
    cfg.write_text(cfg.read_text() + "classes:\n- person\n- persn\n")
    with pytest.raises(ConfigError) as info:
        resolve_run(cfg)
    assert str(info.value).startswith(
        f"{cfg}:{_line(cfg, '- persn')}: classes[1]: 'persn' not among the 80 classes of model "
        f"yolov8n; did you mean 'person'")


def test_an_encoding_the_artifact_lacks_is_found_at_resolve(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", model=str(_fp32_artifact(tmp_path)),
                       precision="int8")
    with pytest.raises(ModelError, match="precision 'int8' on onnxruntime needs one of"):
        resolve_run(cfg)


def test_an_unloadable_plugin_backend_names_the_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", backend="no_such_pkg.mod:Thing")
    with pytest.raises(Exception, match=rf"^{cfg}:\d+: backend: backend plugin "
                                        r"'no_such_pkg.mod:Thing' cannot be loaded"):
        resolve_run(cfg)


# Issue 15 item 9 (red on 5b6f079: a secret key of the wrong length got as far as the socket,
# zmq.error.ZMQError: Invalid argument, traceback and exit 1).
def test_a_curve_secret_key_of_the_wrong_length_is_one_line_naming_the_file(
        tmp_path: Path) -> None:
    from lepton_edge.keys import create_keypair

    _, secret = create_keypair(tmp_path / "keys", "server")
    text = secret.read_text()
    start = text.index('secret-key = "') + len('secret-key = "')
    secret.write_text(text[:start] + text[start + 1:])  # one character short
    (tmp_path / "clients").mkdir()
    cfg = write_config(tmp_path / "c.yaml", publish={
        "endpoint": "tcp://127.0.0.1:0",
        "curve": {"server_secret_key": str(secret), "allowed_clients": str(tmp_path / "clients")}})
    with pytest.raises(ConfigError) as info:
        resolve_run(cfg)
    assert str(info.value).startswith(
        f"{cfg}:{_line(cfg, 'server_secret_key')}: publish.curve.server_secret_key: {secret}: "
        f"the secret key is 39 characters, a CURVE key is 40 (Z85)")


def test_with_overrides_validates_without_reading_the_file_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    run = resolve_run(cfg)
    cfg.write_text("not: [valid")  # not read again
    bench = run.with_overrides([Override("cameras", [{"id": "x", "url": "v.avi",
                                                      "mode": "bench"}], "bench")])
    assert bench.config.cameras[0].id == "x" and bench.artifact is run.artifact
    with pytest.raises(ConfigError, match=r"^bench: cameras\[0\]\.max_frames: Input should be "
                                          r"greater than or equal to 1"):
        run.with_overrides([Override("cameras", [{"id": "x", "url": "v", "max_frames": 0}],
                                     "bench")])


def test_naming_prefixes_where_the_key_was_set(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml")
    run = resolve_run(cfg, [Override("log_level", "error", "--log-level")])
    with pytest.raises(ConfigError) as info, run.naming("publish.endpoint"):
        raise ConfigError("publish.endpoint: cannot bind")
    assert str(info.value) == f"{cfg}:{_line(cfg, 'endpoint:')}: publish.endpoint: cannot bind"
    assert run.where("log_level") == "--log-level"
    assert run.where("metrics.port") == str(cfg)  # not in the file: no made-up line
