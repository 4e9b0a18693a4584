"""gateway/cache/entry_tokens.py: opaque per-tenant names for cache entries."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cache.entry_tokens import KEY_FILE, EntryTokens
from gateway.core.sqlite import MAX_INT

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier


def test_names_turn_back_into_their_ids_for_their_tenant_only(tmp_path: Path) -> None:
    tokens = EntryTokens.beside(tmp_path / "cache.sqlite3")
    ids = [*range(1, 200), MAX_INT]
    for entry_id in ids:
        name = tokens.name("acme", entry_id)
        assert tokens.entry_id("acme", name) == entry_id
        assert tokens.entry_id("globex", name) != entry_id
    names = [tokens.name("acme", i) for i in ids]
    assert len(set(names)) == len(ids)
    assert sorted(names) != names, "successive entries do not get ordered names"


def test_the_key_is_made_once_private_and_kept_across_restarts(tmp_path: Path) -> None:
    database = tmp_path / "data" / "cache.sqlite3"
    name = EntryTokens.beside(database).name("acme", 7)
    key = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert EntryTokens.beside(database).name("acme", 7) == name
    assert EntryTokens.beside(tmp_path / "other" / "c.sqlite3").name("acme", 7) != name


def _name_after(barrier: Barrier, database: Path, names: Queue[str]) -> None:
    barrier.wait()
    names.put(EntryTokens.beside(database).name("acme", 7))


def test_processes_opening_one_folder_at_once_all_read_the_one_whole_key(tmp_path: Path) -> None:
    database = tmp_path / "data" / "cache.sqlite3"
    database.parent.mkdir()
    context = multiprocessing.get_context("fork")
    barrier, names = context.Barrier(6), context.Queue()
    makers = [context.Process(target=_name_after, args=(barrier, database, names))
              for _ in range(6)]
    for maker in makers:
        maker.start()
    seen = {names.get(timeout=60) for _ in makers}
    for maker in makers:
        maker.join(60)
        assert maker.exitcode == 0
    assert seen == {EntryTokens.beside(database).name("acme", 7)}
    assert [p.name for p in database.parent.iterdir()] == [KEY_FILE], "a draft was left"


def test_what_is_not_a_name_resolves_to_nothing(tmp_path: Path) -> None:
    tokens = EntryTokens.beside(tmp_path / "cache.sqlite3")
    for raw in ("42", "ce_", "ce_12", "ce_zzzzzzzzzzzzzzzz", "ce_0123456789abcdef0", "x" * 19):
        assert tokens.entry_id("acme", raw) is None
