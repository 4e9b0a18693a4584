"""Data and helpers for the learned-routing tests: two classes of real prompts, settings, outcomes.

``TAX`` prompts are the class a fake cheap tier fails; ``CHAT`` prompts it answers well; their
vectors come from the fixtures in ``tests.learning_fixtures``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gateway.core.routing_settings import LearningSettings, TierPlan
from gateway.routing.learned.learner import Learner, Outcome, Source
from gateway.routing.router import Router

FloatArray = npt.NDArray[np.float32]
RouterFactory = Callable[..., Awaitable[Router]]
PLAN = TierPlan(("cheap", "reasoning"), "cheap")

TAX = [
    "how do I deduct home office expenses on my income tax return?",
    "what is the capital gains tax rate on shares held for two years?",
    "can I claim my child's daycare costs as a tax credit?",
    "how is VAT calculated on imported goods?",
    "do I pay income tax on a lottery win?",
    "what happens if I file my tax return late?",
    "how are stock options taxed when I exercise them?",
    "is rental income taxable if I rent out a room?",
    "how do I estimate quarterly tax payments as a freelancer?",
    "which donations are tax deductible?",
    "what is the difference between a tax deduction and a tax credit?",
    "how does the tax on inherited property work?",
]
CHAT = [
    "hello, how are you today?",
    "translate good morning into spanish",
    "tell me a short joke about cats",
    "what is a good name for a pet goldfish?",
    "say thank you in japanese",
    "recommend a board game for four friends",
    "hi there! nice to meet you",
    "what rhymes with orange?",
    "suggest a title for my holiday photo album",
    "how do you say good night in italian?",
    "give me a fun fact about penguins",
    "what's a nice greeting for a birthday card?",
]


def learning(**changes: object) -> LearningSettings:
    """Enabled settings with a small memory and no exploration, changed by ``changes``."""
    return replace(LearningSettings(enabled=True, max_outcomes=1000, explore_share=0.0),
                   **changes)  # type: ignore[arg-type]


def outcome(vector: FloatArray, tier: str, ok: bool, at_s: float = 0.0,
            tenant: str | None = None) -> Outcome:
    return Outcome(vector, tier, 1.0 if ok else 0.0, 1.0, at_s, tenant, Source.FEEDBACK)


def still(at_s: float = 0.0) -> Callable[[], float]:
    """A clock stopped at ``at_s``: outcomes recorded then have not decayed at all."""
    return lambda: at_s


@asynccontextmanager
async def started(settings: LearningSettings, path: Path,
                  at_s: float = 0.0) -> AsyncIterator[Learner]:
    """A learner on the file ``path`` (its clock stopped at ``at_s``), started; closed on exit."""
    learner = Learner(settings, path=path, clock=still(at_s))
    await learner.start()
    try:
        yield learner
    finally:
        await learner.close()
