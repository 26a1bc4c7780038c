"""The README's Node.js example, as written, against the real daemon: it runs with node and the
`zeromq` npm package (installed into .node/ by scripts/install-node-deps.sh) and prints one
line per frame. Skips with the reason where node or npm is absent."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_config

NODE_MODULES = REPO / ".node" / "node_modules"


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    m = re.search(r"Node\.js and `zeromq`:\s*```js\n(.*?)```", text, re.S)
    assert m, "README.md: no ```js block after 'Node.js and `zeromq`:'"
    return m.group(1)


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm for the README's Node.js example")
    if not (NODE_MODULES / "zeromq" / "package.json").is_file():
        done = subprocess.run(["bash", str(REPO / "scripts" / "install-node-deps.sh")],
                              capture_output=True, text=True, timeout=300)
        if not (NODE_MODULES / "zeromq" / "package.json").is_file():
            pytest.skip(f"npm could not install zeromq (offline?): {done.stderr[-500:]}")
    return node


def test_readme_snippet_endpoint_is_the_one_we_replace() -> None:
    assert "tcp://camera-box:5556" in readme_snippet()


def test_readme_node_example_runs(node: str, tmp_path: Path, start_daemon) -> None:
    config = write_config(tmp_path / "cam.yaml", cameras=[
        {"id": "plaza", "url": str(REPO / "samples" / "vtest.avi"), "mode": "bench",
         "max_frames": 30}])
    import yaml

    endpoint = yaml.safe_load(config.read_text())["publish"]["endpoint"]
    script = tmp_path / "subscribe.js"  # no package.json above it: CommonJS, as in the README
    script.write_text(readme_snippet().replace("tcp://camera-box:5556", endpoint))
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    proc = subprocess.Popen([node, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, f"node exited: {proc.stderr.read()[-2000:]}"
        daemon = start_daemon(config, "--wait-subscribers", "1")
        assert daemon.wait(120) == 0, daemon.stderr()[-2000:]
        time.sleep(1.0)
    finally:
        proc.terminate()
        out, err = proc.communicate(10)
    lines = out.splitlines()
    assert len(lines) == 30, f"{len(lines)} lines from node; stderr: {err[-1000:]}"
    for i, line in enumerate(lines):
        topic, seq, n = line.split()
        assert (topic, int(seq)) == ("det.plaza", i) and int(n) >= 0, line
