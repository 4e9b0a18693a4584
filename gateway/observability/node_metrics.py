"""``/metrics`` for a node of several gateway processes: every process's series in one scrape.

Prometheus scraping the shared port lands on one process at random (``[server] processes`` > 1,
``gateway.core.processes``). So each process of a node also serves its app on a Unix socket in
the node's folder (``process-<index>.sock``, which the supervisor owns), and the process a
scrape lands on reads its siblings' own exposition there (``/metrics?scope=process``) and
answers with all of them: each series labelled ``process="<index>"``, the families merged so
each has one HELP and one TYPE line. Queries sum them (``sum without (process) (...)``). Families
read from state the processes share (budgets) come once, from the process the scrape landed on,
without a ``process`` label: a sibling leaves them out of its answer, so an alert on them is one
series whichever process answers. A sibling that
does not answer within ``SIBLING_TIMEOUT_S`` (restarting, say) is left out of that scrape and
the scrape says so in ``gateway_node_processes_scraped``. Touches the node folder's sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gateway.core.toml_table import text_lines

log = logging.getLogger(__name__)

SIBLING_TIMEOUT_S = 2.0
SOCKET_GLOB = "process-*.sock"
SCOPE_PROCESS = "process"
"""``?scope=process``: this process's series alone (what a sibling asks for)."""
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def asked_by_sibling(request: web.Request) -> bool:
    return request.query.get("scope") == SCOPE_PROCESS


async def node_response(request: web.Request, registry: CollectorRegistry, index: int,
                        node_dir: Path, shared: frozenset[str] = frozenset()) -> web.Response:
    """The node's metrics, or this process's alone when a sibling asks (``shared`` families
    left out then; see the module docstring)."""
    sibling = asked_by_sibling(request)
    text = process_text(registry, index, shared, with_shared=not sibling)
    if not sibling:
        text = await node_text(text, node_dir, index, request.headers.get("Authorization"))
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def socket_path(node_dir: Path, index: int) -> Path:
    return node_dir / f"process-{index}.sock"


def process_text(registry: CollectorRegistry, index: int, shared: frozenset[str] = frozenset(),
                 *, with_shared: bool = True) -> str:
    """This process's exposition (text format 0.0.4), every series labelled with ``index``
    except those of the ``shared`` families: unlabelled, or left out without ``with_shared``."""
    label = f'process="{index}"'
    lines, family = [], ""
    for line in text_lines(generate_latest(registry).decode()):
        if line.startswith(("# HELP ", "# TYPE ")):
            family = line.split(" ", 3)[2]
        if family in shared:
            if with_shared:
                lines.append(line)
        else:
            lines.append(line if line.startswith("#") or not line else _labelled(line, label))
    return "\n".join(lines) + "\n"


def _labelled(sample: str, label: str) -> str:
    brace, space = sample.find("{"), sample.find(" ")
    if 0 <= brace < space:
        return f"{sample[:brace + 1]}{label},{sample[brace + 1:]}"
    return f"{sample[:space]}{{{label}}}{sample[space:]}"


def merge(texts: Iterable[str]) -> str:
    """One exposition from several: each family's HELP and TYPE once, then every text's
    samples of it (the format wants a family's lines together)."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = {}
    for text in texts:
        family = ""
        for line in text_lines(text):
            if line.startswith(("# HELP ", "# TYPE ")):
                family = line.split(" ", 3)[2]
                known = headers.setdefault(family, [])
                if len(known) < 2 and line not in known:
                    known.append(line)
                samples.setdefault(family, [])
            elif line and not line.startswith("#"):
                samples.setdefault(family, []).append(line)
    out = [line for family in samples for line in (*headers.get(family, []),
                                                     *samples[family])]
    return "\n".join(out) + "\n"


async def node_text(own: str, node_dir: Path, index: int, authorization: str | None) -> str:
    """``own`` with the series of every sibling that answers, merged."""
    siblings = [p for p in sorted(node_dir.glob(SOCKET_GLOB)) if p != socket_path(node_dir, index)]
    texts = await asyncio.gather(*(_sibling(p, authorization) for p in siblings))
    answered = [t for t in texts if t is not None]
    scraped = (f"# HELP gateway_node_processes_scraped Processes of this node whose series "
               f"this scrape holds (the others did not answer).\n"
               f"# TYPE gateway_node_processes_scraped gauge\n"
               f"gateway_node_processes_scraped {1 + len(answered)}.0\n")
    return merge([own, *answered, scraped])


async def _sibling(path: Path, authorization: str | None) -> str | None:
    headers = {"Authorization": authorization} if authorization else {}
    timeout = aiohttp.ClientTimeout(total=SIBLING_TIMEOUT_S)
    connector = aiohttp.UnixConnector(path=str(path))
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
        async with (aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                    session.get("http://node/metrics", params={"scope": SCOPE_PROCESS},
                                headers=headers) as resp):
            if resp.status == 200:
                return await resp.text()
            log.warning("%s answered /metrics with %d", path.name, resp.status)
    return None
