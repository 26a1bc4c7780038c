"""The ZeroMQ sink: `det.<camera>` per inferred frame, `event.`/`verdict.` outcomes and `health`
on the publisher's XPUB socket. XPUB sends never block (a subscriber past its high-water mark
loses messages), so this sink runs inline in the emitting thread, which is also the one thread
that uses the socket."""

from __future__ import annotations

from lepton_edge.messages import DET_PREFIX, HEALTH_TOPIC, HealthMessage, health_payload
from lepton_edge.results import FrameResult, Outcome
from lepton_edge.sinks.publisher import Publisher


class ZmqSink:
    name = "zmq"

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def open(self) -> None:
        pass  # the daemon opens the publisher early, to wait for subscribers before frame 0

    def frame(self, result: FrameResult, payload: bytes) -> None:
        self.publisher.send(DET_PREFIX + result.camera, payload)

    def outcome(self, outcome: Outcome) -> None:
        self.publisher.send(outcome.topic, outcome.to_payload())

    def health(self, health: HealthMessage) -> None:
        self.publisher.send(HEALTH_TOPIC, health_payload(health))

    def subscriptions(self) -> int:
        return self.publisher.poll_subscriptions()

    def close(self) -> None:
        self.publisher.close()
