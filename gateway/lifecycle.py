"""The gateway's lifecycle as explicit states: starting, ready, draining, closed.

``/readyz`` answers 200 only in ``ready``; a draining gateway finishes what it has (streams
included, up to the grace period) and refuses new work with 503.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    CLOSED = "closed"


class Lifecycle:
    def __init__(self) -> None:
        self.state = State.STARTING

    def move(self, state: State) -> None:
        self.state = state
