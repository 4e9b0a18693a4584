"""gateway/cache/answers.py: lookups' read-only connections see what the writer committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cache.store import CacheStore, NewEntry


def _entry(text: str, fingerprint: str = "ctx") -> NewEntry:
    return NewEntry(namespace="tenant:a", fingerprint=fingerprint, exact_key=text.encode(),
                    text=text, vector=None, body=f'{{"q": "{text}"}}'.encode(),
                    created_at=1.0, expires_at=None)


async def test_answers_follow_the_writers_commits_and_deletions(tmp_path: Path) -> None:
    store = await CacheStore.open(tmp_path / "cache.sqlite3")
    try:
        assert await store.reader.body(1) is None
        first, second, other = await store.insert(
            [_entry("one"), _entry("two"), _entry("three", fingerprint="other")])
        assert await store.reader.body(first) == b'{"q": "one"}'
        assert store.reader.bodies([first, second, other, 999], "ctx") == {
            first: b'{"q": "one"}', second: b'{"q": "two"}'}
        await store.delete([first])
        assert await store.reader.body(first) is None
        assert list(store.reader.bodies([first, second], "ctx")) == [second]
        assert store.reader.bodies([], "ctx") == {}
    finally:
        await store.close()
    with pytest.raises(RuntimeError):
        store.reader.bodies([1], "ctx")
