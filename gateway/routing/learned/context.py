"""Wiring: the learner's cleanup context and its app key.

``configure_learning(app, settings, data_dir)`` registers ``learner_context``, which (when
``[routing.learning] enabled``) builds the ``Learner`` on ``<data_dir>/learning.sqlite3``,
restores it, and keeps it under ``LEARNER`` while the app runs; on exit it learns and writes
what is queued. With learning disabled ``LEARNER`` is absent. Register it before the contexts
that feed it (so it closes after them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from gateway.core.routing_settings import LearningSettings
from gateway.routing.learned.learner import Learner


@dataclass(frozen=True, slots=True)
class LearningConfig:
    settings: LearningSettings
    data_dir: Path
    clock: Callable[[], float] = field(default=time.time)
    """Wall-clock seconds for the learner's recency weighting (and the outcomes' times)."""


LEARNING_CONFIG = web.AppKey("learning_config", LearningConfig)
LEARNER = web.AppKey("routing_learner", Learner)


def configure_learning(app: web.Application, settings: LearningSettings, data_dir: Path) -> None:
    """Put the learning configuration on ``app`` and register ``learner_context``."""
    app[LEARNING_CONFIG] = LearningConfig(settings, data_dir)
    app.cleanup_ctx.append(learner_context)


async def learner_context(app: web.Application) -> AsyncIterator[None]:
    config = app[LEARNING_CONFIG]
    if not config.settings.enabled:
        yield
        return
    learner = Learner(config.settings, path=config.settings.path(config.data_dir),
                      clock=config.clock)
    await learner.start()
    app[LEARNER] = learner
    try:
        yield
    finally:
        await learner.close()
