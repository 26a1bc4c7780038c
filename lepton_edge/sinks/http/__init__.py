"""The HTTP API and the live page. aiohttp (the `http` extra) is needed only to serve:
without it these modules import and `HttpSink.open()` says which extra to install."""

from __future__ import annotations

from .config import HttpConfig
from .frames import FrameStore, Overlay, render
from .sink import HttpSink

__all__ = ["FrameStore", "HttpConfig", "HttpSink", "Overlay", "render"]
