"""A fake upstream that replays real recorded provider responses byte for byte.

The recordings in ``tests/data/provider_recordings`` (their sources in its ``SOURCES.md``) were
captured from the real Anthropic and Gemini APIs by other projects. Each has a ``.meta.json``
with the HTTP status and content type (and ``content_encoding`` for a gzip body) to replay
with. ``Replay.serve`` names the recording every request gets; ``piece_bytes`` writes the body
in pieces of that many bytes, each flushed on its own, so that lines and events are split
across reads the way a slow network splits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

RECORDINGS = Path(__file__).resolve().parent / "data" / "provider_recordings"


@dataclass(frozen=True, slots=True)
class Recording:
    name: str
    status: int
    content_type: str
    content_encoding: str | None
    body: bytes  # the bytes on the wire (gzip bytes for a gzip recording)

    @property
    def text(self) -> str:
        """The decoded body: the ``.sse`` beside a ``.sse.gz``, else the body itself."""
        if self.content_encoding == "gzip":
            return (RECORDINGS / self.name.removesuffix(".gz")).read_text()
        return self.body.decode()

    @property
    def json(self) -> Any:
        return orjson.loads(self.body)


def recording(name: str) -> Recording:
    meta = orjson.loads((RECORDINGS / f"{name}.meta.json").read_bytes())
    return Recording(name, int(meta["status"]), str(meta["content_type"]),
                     meta.get("content_encoding"), (RECORDINGS / name).read_bytes())


def recorded(prefix: str) -> list[str]:
    """Every recording whose file name starts with ``prefix``, sorted."""
    return sorted(p.name for p in RECORDINGS.glob(f"{prefix}*")
                  if (p.parent / f"{p.name}.meta.json").exists())


@dataclass
class Replay:
    serve: str | None = None
    piece_bytes: int | None = None
    paths: list[str] = field(default_factory=list)


def replay_app(replay: Replay) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        replay.paths.append(request.path_qs)
        assert replay.serve is not None, "no recording chosen"
        rec = recording(replay.serve)
        headers = {"Content-Type": rec.content_type}
        if rec.content_encoding:
            headers["Content-Encoding"] = rec.content_encoding
        if replay.piece_bytes is None:
            return web.Response(status=rec.status, body=rec.body, headers=headers)
        response = web.StreamResponse(status=rec.status, headers=headers)
        await response.prepare(request)
        for start in range(0, len(rec.body), replay.piece_bytes):
            await response.write(rec.body[start:start + replay.piece_bytes])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handle)
    return app
