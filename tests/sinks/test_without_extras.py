"""Without the `mqtt` and `http` extras the modules still import (and `lepton-edge schema`
works); opening a sink says which extra to install. A subprocess blocks paho and aiohttp."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO, daemon_env

CODE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('aiohttp', 'paho'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
import lepton_edge.sinks.http as h, lepton_edge.sinks.mqtt as m, lepton_edge.schema as s
from lepton_edge.errors import BackendUnavailableError
for sink in (h.HttpSink(h.HttpConfig(port=0)), m.MqttSink(m.MqttConfig(host='x'))):
    try:
        sink.open()
    except BackendUnavailableError as err:
        print(err)
print(sorted(s.schemas()))
"""


def test_sinks_import_without_their_extras() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                         env=daemon_env(), cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "http: needs aiohttp; install the extra: pip install 'lepton-edge[http]'"
    assert lines[1] == ("mqtt: needs paho-mqtt 2.x; install the extra: "
                        "pip install 'lepton-edge[mqtt]'")
    assert "config.schema.json" in lines[2]
