"""gateway/api/cache_admin.py and gateway/cache/context.py: the cache on an app, its admin calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.cache.context import CACHE, vector_space
from gateway.core.appkeys import SETTINGS
from gateway.core.config import parse
from tests.cache_fixtures import CONTEXT, MODEL_DIR, answer, unit_vectors
from tests.tenant_fixtures import ADMIN_KEY, SECRET, bearer


def _app(tmp_path: Path) -> web.Application:
    """The whole gateway, its cache in ``tmp_path``, an admin key."""
    settings = parse(
        {"providers": [{"name": "demo", "kind": "demo"}],
         "models": [{"name": "m", "provider": "demo"}],
         "embedder": {"model_dir": str(MODEL_DIR)},
         "server": {"data_dir": str(tmp_path)},
         "cache": {"database": "cache.sqlite3", "index_dir": "index"},
         "tenants": {"bootstrap": False, "tokenizer": ""}},
        env={"GATEWAY_ADMIN_KEY": ADMIN_KEY, "GATEWAY_KEY_SECRET": SECRET.decode()},
        base_dir=tmp_path, source="<test>",
    )
    return create_app(settings)


ADMIN = bearer(ADMIN_KEY)


async def test_vector_space_comes_from_the_model_directory(tmp_path: Path) -> None:
    space = vector_space(_app(tmp_path)[SETTINGS].embedder)
    assert space is not None and space.dim == 384
    assert space.model.startswith("all-MiniLM-L6-v2|mean")
    assert vector_space(None) is None


async def test_admin_invalidates_an_entry_and_a_namespace(tmp_path: Path,
                                                          aiohttp_client: Any) -> None:
    app = _app(tmp_path)
    client = await aiohttp_client(app)
    cache = app[CACHE]
    vectors = unit_vectors(3)
    for i, namespace in enumerate(("tenant:a", "tenant:a", "tenant:b")):
        await cache.store(namespace, CONTEXT, f"q{i}", vectors[i], answer())
    await cache.flush()
    hit = await cache.lookup("tenant:a", CONTEXT, "q0", None, "exact")
    assert hit is not None

    resp = await client.delete(f"/admin/cache/entries/{hit.entry_id}", headers=ADMIN)
    assert (resp.status, await resp.json()) == (200, {"invalidated": 1,
                                                       "entry_id": hit.entry_id})
    resp = await client.delete(f"/admin/cache/entries/{hit.entry_id}", headers=ADMIN)
    assert resp.status == 404
    assert (await resp.json())["error"]["type"] == "not_found_error"
    resp = await client.delete("/admin/cache/entries/abc", headers=ADMIN)
    assert resp.status == 400

    resp = await client.delete("/admin/cache/namespaces/tenant:a", headers=ADMIN)
    assert (await resp.json()) == {"invalidated": 1, "namespace": "tenant:a"}
    stats = await (await client.get("/admin/cache", headers=ADMIN)).json()
    assert (stats["entries"], stats["semantic"]) == (1, True)
    saved = await (await client.post("/admin/cache/save", headers=ADMIN)).json()
    assert saved["saved_files"] >= 0


async def test_app_shutdown_flushes_and_saves(tmp_path: Path, aiohttp_client: Any) -> None:
    app = _app(tmp_path)
    client = await aiohttp_client(app)
    await app[CACHE].store("tenant:a", CONTEXT, "q", unit_vectors(1)[0], answer())
    await client.close()
    assert (tmp_path / "index" / "meta.json").exists()
    reopened = _app(tmp_path)
    client = await aiohttp_client(reopened)
    assert await reopened[CACHE].lookup("tenant:a", CONTEXT, "q", None, "exact") is not None


async def test_the_cache_admin_calls_refuse_anyone_but_the_admin(
    tmp_path: Path, aiohttp_client: Any
) -> None:
    client = await aiohttp_client(_app(tmp_path))
    assert (await client.get("/admin/cache")).status == 401
    assert (await client.delete("/admin/cache/namespaces/tenant:a",
                                headers=bearer("gw-not-a-key"))).status == 401
