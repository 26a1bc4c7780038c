"""The HTTP API and the live page (needs the `http` extra: aiohttp)."""

from __future__ import annotations

from .config import HttpConfig
from .frames import FrameStore, Overlay, render

__all__ = ["FrameStore", "HttpConfig", "HttpSink", "Overlay", "render"]


def __getattr__(name: str) -> object:
    if name == "HttpSink":  # aiohttp is imported only when the sink is used
        try:
            from .sink import HttpSink
        except ImportError as err:
            from ...errors import BackendUnavailableError

            raise BackendUnavailableError("http: needs aiohttp; install the extra: "
                                          "pip install 'lepton-edge[http]'") from err
        return HttpSink
    raise AttributeError(name)
