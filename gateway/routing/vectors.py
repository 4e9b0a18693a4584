"""The on-disk cache of utterance vectors, so a restart does not embed the routes again.

One ``.npz`` file holds vectors of any number of texts under any number of models, each keyed by
``sha256(model name + NUL + text)``; a changed model therefore misses instead of serving stale
vectors. ``embed_cached`` fills what is missing through any async embed function and saves the
file atomically (write to a temporary file, then rename). ``InProcessEmbedder`` is the model in
this process, for when no worker is there to ask. Touches only the cache file it is given and
the model directory.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from embedder_worker.model_files import missing_model
from gateway.core.toml_table import ConfigError

if TYPE_CHECKING:
    from embedder_worker.model import OnnxEmbedder

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
Embed = Callable[[Sequence[str]], Awaitable[FloatArray]]
_BATCH = 256
_SAVE_EVERY = 16  # batches: a long first run keeps its progress if it is interrupted


def text_key(model: str, text: str) -> bytes:
    """The 32-byte key of ``text`` embedded by ``model``."""
    return hashlib.sha256(model.encode("utf-8") + b"\0" + text.encode("utf-8")).digest()


class VectorCache:
    """Text vectors keyed by model and text; load once, look up, add, save."""

    def __init__(self, path: Path, model: str) -> None:
        self.path = path
        self.model = model
        self._index: dict[bytes, int] = {}
        self._rows: list[FloatArray] = []
        self._dirty = False

    @classmethod
    def load(cls, path: Path, model: str) -> VectorCache:
        """The cache stored at ``path``; an absent or unreadable file gives an empty cache."""
        cache = cls(path, model)
        if not path.exists():
            return cache
        try:
            with np.load(path, allow_pickle=False) as data:
                keys, vectors = data["keys"], np.asarray(data["vectors"], dtype=np.float32)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable vector cache %s: %s", path, exc)
            return cache
        raw = np.ascontiguousarray(keys).tobytes()  # not bytes(k): numpy strips trailing NULs
        if len(raw) != 32 * len(vectors):
            log.warning("ignoring vector cache %s: keys and vectors do not match", path)
            return cache
        cache._index = {raw[i * 32 : (i + 1) * 32]: i for i in range(len(vectors))}
        cache._rows = list(vectors)
        return cache

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct texts of ``texts`` that have no vector yet, in first-seen order."""
        return [t for t in dict.fromkeys(texts) if text_key(self.model, t) not in self._index]

    def put(self, texts: Sequence[str], vectors: FloatArray) -> None:
        for text, vector in zip(texts, vectors, strict=True):
            key = text_key(self.model, text)
            if key not in self._index:
                self._index[key] = len(self._rows)
                self._rows.append(np.asarray(vector, dtype=np.float32))
                self._dirty = True

    def get(self, texts: Sequence[str]) -> FloatArray:
        """[len(texts), dim] vectors; KeyError when one is missing."""
        rows = [self._rows[self._index[text_key(self.model, t)]] for t in texts]
        if not rows:
            return np.empty((0, 0), dtype=np.float32)
        return np.ascontiguousarray(np.stack(rows), dtype=np.float32)

    def save(self) -> None:
        """Write the file if anything was added (atomically: a reader never sees half a file)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Keys were inserted in row order, so the two arrays line up.
        keys = np.frombuffer(b"".join(self._index), dtype=np.uint8).reshape(-1, 32)
        vectors = np.stack(self._rows) if self._rows else np.empty((0, 0), np.float32)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
            np.savez(f, keys=keys, vectors=vectors)
        os.replace(tmp, self.path)
        self._dirty = False


async def embed_cached(texts: Sequence[str], cache: VectorCache, embed: Embed) -> FloatArray:
    """Vectors of ``texts``, embedding (in batches) and saving only those not yet cached."""
    missing = cache.missing(texts)
    if missing:
        log.info("embedding %d of %d texts (%s)", len(missing), len(texts), cache.model)
    for n, start in enumerate(range(0, len(missing), _BATCH), 1):
        batch = missing[start : start + _BATCH]
        cache.put(batch, await embed(batch))
        if n % _SAVE_EVERY == 0:
            cache.save()
    cache.save()
    return cache.get(texts)


class InProcessEmbedder:
    """The embedding model in this process, loaded on the first call only (in a thread).

    For start-up before a worker is live, and for the command line: a warm vector cache never
    loads it. ``options`` are ``OnnxEmbedder``'s keyword arguments (pooling, max_length, ...).
    """

    def __init__(self, model_dir: Path, **options: Any) -> None:
        self.model_dir = model_dir
        self._options = options
        self._model: OnnxEmbedder | None = None

    @functools.cached_property
    def name(self) -> str:
        """The cache key's model name: the model's, plus any options that change vectors."""
        # Imported here: onnxruntime is heavy, and most processes never need it.
        from embedder_worker.model import ModelConfig

        return model_tag(ModelConfig.load(self.model_dir).name, self._options)

    async def embed(self, texts: Sequence[str]) -> FloatArray:
        if self._model is None:
            from embedder_worker.model import OnnxEmbedder

            if (problem := missing_model(self.model_dir)) is not None:
                raise ConfigError(problem)  # one line from a command, not onnxruntime's trace
            self._model = await asyncio.to_thread(OnnxEmbedder, self.model_dir, **self._options)
        return await asyncio.to_thread(self._model.embed, list(texts))


def model_tag(name: str, options: Mapping[str, Any]) -> str:
    """``name``, suffixed with the options that were set (they change the vectors)."""
    set_options = sorted((k, v) for k, v in options.items() if v not in (None, "", False))
    return name + "".join(f"|{k}={v}" for k, v in set_options)
