"""A sink that calls a function with each frame, inline in the emitting thread: for dev tools
that must see every frame of a bench run (`--annotate`) and for tests."""

from __future__ import annotations

from collections.abc import Callable

from lepton_edge.messages import HealthMessage
from lepton_edge.results import FrameResult, Outcome

OnFrame = Callable[[FrameResult, bytes], None]


class CallbackSink:
    def __init__(self, on_frame: OnFrame, name: str = "callback") -> None:
        self.name = name
        self._on_frame = on_frame

    def open(self) -> None:
        pass

    def frame(self, result: FrameResult, payload: bytes) -> None:
        self._on_frame(result, payload)

    def outcome(self, outcome: Outcome) -> None:
        pass

    def health(self, health: HealthMessage) -> None:
        pass

    def close(self) -> None:
        pass
