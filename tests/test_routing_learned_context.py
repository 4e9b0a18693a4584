"""Tests for gateway/routing/learned/context.py: the learner's life on the app."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.routing.learned.context import LEARNER, configure_learning
from tests.learning_helpers import FloatArray, learning, outcome

pytest_plugins = ["tests.routing_fixtures", "tests.learning_fixtures"]


async def run_app(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()  # enters the cleanup contexts
    return runner


async def test_the_app_keeps_its_learner_and_restores_it_after_a_restart(
    tmp_path: Path, tax_vectors: FloatArray
) -> None:
    app = web.Application()
    configure_learning(app, learning(), tmp_path)
    runner = await run_app(app)
    learner = app[LEARNER]
    for v in tax_vectors:
        learner.observe(outcome(v, "cheap", False, at_s=learner.clock()))
    await learner.drained()
    await runner.cleanup()
    assert (tmp_path / "learning.sqlite3").exists()

    again = web.Application()
    configure_learning(again, learning(), tmp_path)
    runner = await run_app(again)
    try:
        assert again[LEARNER].stats().remembered == len(tax_vectors)
        assert again[LEARNER].stats().loaded
    finally:
        await runner.cleanup()


async def test_with_learning_disabled_the_app_has_no_learner(tmp_path: Path) -> None:
    app = web.Application()
    configure_learning(app, learning(enabled=False), tmp_path)
    runner = await run_app(app)
    try:
        assert LEARNER not in app
    finally:
        await runner.cleanup()
    assert not (tmp_path / "learning.sqlite3").exists()
