"""Fixtures for the routing tests: the real embedding model in-process and a small routes file.

Test modules load this with ``pytest_plugins = ["tests.routing_fixtures"]``. The model directory
comes from ``GATEWAY_TEST_MODEL_DIR`` (default ``models/all-MiniLM-L6-v2`` under the repository
root). The routes are few and short, so embedding them and training the head take milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from embedder_worker.model import OnnxEmbedder
from gateway.core.routing_settings import TierPlan
from gateway.routing.router import Router, build_router, embed_routes
from gateway.routing.routes import RouteSet, parse_routes
from gateway.routing.vectors import VectorCache
from tests.services import missing

ROOT = Path(__file__).resolve().parent.parent
FloatArray = npt.NDArray[np.float32]
Embed = Callable[[Sequence[str]], Awaitable[FloatArray]]
PLAN = TierPlan(("cheap", "reasoning"), "cheap")

SMALL_ROUTES = """
[[routes]]
name = "greeting"
tier = "cheap"
utterances = [
  "hi", "hello there", "good morning!", "hey, how are you?", "thanks a lot", "bye for now",
  "nice to meet you", "what's up",
]

[[routes]]
name = "code"
tier = "reasoning"
cache = "exact"
utterances = [
  "write a python function that sorts a list",
  "why does my javascript code throw a TypeError?",
  "fix the bug in this SQL query",
  "implement a binary search tree in java",
  "how do I read a file line by line in rust?",
  "refactor this class to use dependency injection",
  "write unit tests for this function",
  "explain this regular expression",
]

[[routes]]
name = "translate"
tier = "cheap"
cache = "exact"
utterances = [
  "translate good night into spanish",
  "how do you say thank you in japanese",
  "what does bonjour mean in english",
  "translate this sentence into german",
  "say hello in italian",
  "put this paragraph into french",
  "what is the portuguese word for bread",
  "translate 'where is the station' to dutch",
]
"""


@pytest.fixture(scope="session")
def routing_model_dir() -> Path:
    configured = os.environ.get("GATEWAY_TEST_MODEL_DIR")
    path = Path(configured) if configured else ROOT / "models" / "all-MiniLM-L6-v2"
    if not (path / "model.onnx").exists():
        missing(f"no embedding model at {path} (make install builds it)")
    return path


@pytest.fixture(scope="session")
def onnx_embedder(routing_model_dir: Path) -> OnnxEmbedder:
    return OnnxEmbedder(routing_model_dir)


@pytest.fixture
def embed(onnx_embedder: OnnxEmbedder) -> Embed:
    async def run(texts: Sequence[str]) -> FloatArray:
        return onnx_embedder.embed(list(texts))

    return run


@pytest.fixture
def small_routes() -> RouteSet:
    import tomllib

    return parse_routes(tomllib.loads(SMALL_ROUTES), source="<small>")


RouterFactory = Callable[..., Awaitable[Router]]


@pytest.fixture
def make_router(embed: Embed, onnx_embedder: OnnxEmbedder, tmp_path: Path) -> RouterFactory:
    """Build a router for a route set, with its vectors and head cached under ``tmp_path``."""

    async def make(routes: RouteSet, ambiguity: str = "cheap_first") -> Router:
        cache = VectorCache.load(tmp_path / "cache" / "vectors.npz", onnx_embedder.name)
        vectors = await embed_routes(routes, cache, embed)
        return build_router(routes, vectors, PLAN, model=onnx_embedder.name,
                            cache_dir=tmp_path / "cache", ambiguity=ambiguity)

    return make
