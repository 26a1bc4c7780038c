"""The HTTP API and the live page. aiohttp (the `http` extra) is needed only to serve:
without it these modules import and `HttpSink.open()` says which extra to install."""

from __future__ import annotations

from lepton_edge.sinks.http.config import HttpConfig
from lepton_edge.sinks.http.frames import FrameStore, Overlay, render
from lepton_edge.sinks.http.sink import HttpSink

__all__ = ["FrameStore", "HttpConfig", "HttpSink", "Overlay", "render"]
