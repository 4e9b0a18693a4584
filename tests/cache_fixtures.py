"""Helpers for the semantic cache's tests: settings in a temporary folder, answers, vectors.

The embedding model is the real one (``models/all-MiniLM-L6-v2``), loaded in-process by the test
modules that need it; caches are real (SQLite file, hnswlib graphs) under ``tmp_path``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from embedder_worker.model import OnnxEmbedder
from gateway.cache.index import FloatArray, VectorSpace
from gateway.cache.semantic_cache import SemanticCache
from gateway.core.cache_settings import CacheSettings

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "all-MiniLM-L6-v2"
SPACE = VectorSpace("all-MiniLM-L6-v2|test", 384)
CONTEXT = "context-fingerprint"


def load_embedder() -> OnnxEmbedder:
    return OnnxEmbedder(MODEL_DIR)


def settings_in(directory: Path, **overrides: Any) -> CacheSettings:
    base = CacheSettings(database=directory / "cache.sqlite3", index_dir=directory / "index")
    return replace(base, **overrides)


async def open_cache(directory: Path, *, space: VectorSpace | None = SPACE,
                     clock: Any = None, **overrides: Any) -> SemanticCache:
    settings = settings_in(directory, **overrides)
    if clock is None:
        return await SemanticCache.open(settings, space)
    return await SemanticCache.open(settings, space, clock=clock)


def answer(content: str = "The answer.", finish_reason: str = "stop",
           tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


def unit_vectors(count: int, dim: int = 384, seed: int = 0) -> FloatArray:
    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    normalised: FloatArray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
        np.float32
    )
    return normalised


class FakeClock:
    """A clock the test moves by hand: TTLs without sleeping."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
