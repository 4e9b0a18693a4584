"""A small Chrome DevTools Protocol client over aiohttp's websocket, for the browser tests.

``Browser.launch`` starts headless Chromium with its own profile in a temporary folder and reads
the DevTools address from the line Chromium prints on stderr ("DevTools listening on ws://...")
(no port guessing, no polling). ``Browser.new_page`` opens a tab and attaches to it with a flat
session; ``Page`` offers what the tests need: navigate and wait for the load event, type into a
field and press Enter like a person, read the DOM (works with JavaScript off), evaluate an
expression, watch the network, and save a full-page screenshot.

Every wait is bounded by ``TIMEOUT_S`` so a stuck browser fails the test with a clear message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

TIMEOUT_S = 20.0
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0",
    "--force-color-profile=srgb", "--font-render-hinting=none",
)
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")

Json = dict[str, Any]


class CDPError(Exception):
    """A DevTools command failed, or the browser did not do what was asked in time."""


class Connection:
    """One websocket to the browser: commands matched to replies, events to waiters."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[Json]] = {}
        self._waiters: list[tuple[str, str | None, asyncio.Future[Json]]] = []
        self.listeners: list[Callable[[str, Json], None]] = []
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    async def send(self, method: str, params: Json | None = None,
                   session_id: str | None = None) -> Json:
        message: Json = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id is not None:
            message["sessionId"] = session_id
        reply: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._replies[message["id"]] = reply
        await self._ws.send_str(json.dumps(message))
        async with asyncio.timeout(TIMEOUT_S):
            return await reply

    def expect(self, event: str, session_id: str | None = None) -> asyncio.Future[Json]:
        """A future for the next ``event`` (register it before the action that causes it)."""
        future: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiters.append((event, session_id, future))
        return future

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(message.data))
        finally:
            for reply in self._replies.values():
                if not reply.done():
                    reply.set_exception(CDPError("the browser closed the DevTools connection"))

    def _dispatch(self, data: Json) -> None:
        if "id" in data:
            reply = self._replies.pop(data["id"], None)
            if reply is None or reply.done():
                return
            if "error" in data:
                reply.set_exception(CDPError(f"{data['error'].get('message')}"))
            else:
                reply.set_result(data.get("result", {}))
            return
        method, session = data.get("method", ""), data.get("sessionId")
        for listener in self.listeners:
            listener(method, data)
        for waiter in list(self._waiters):
            name, wanted, future = waiter
            if name == method and wanted in (None, session) and not future.done():
                future.set_result(data.get("params", {}))
                self._waiters.remove(waiter)

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class Page:
    """One tab, driven through its flat DevTools session."""

    def __init__(self, connection: Connection, session_id: str) -> None:
        self._c = connection
        self.session_id = session_id
        self.requested: list[str] = []
        connection.listeners.append(self._on_event)

    def _on_event(self, method: str, data: Json) -> None:
        if method == "Network.requestWillBeSent" and data.get("sessionId") == self.session_id:
            self.requested.append(data["params"]["request"]["url"])

    async def send(self, method: str, params: Json | None = None) -> Json:
        return await self._c.send(method, params, self.session_id)

    async def _until_loaded(self, action: Callable[[], Any]) -> None:
        loaded = self._c.expect("Page.loadEventFired", self.session_id)
        await action()
        try:
            async with asyncio.timeout(TIMEOUT_S):
                await loaded
        except TimeoutError as exc:
            raise CDPError("the page did not finish loading in time") from exc

    async def goto(self, url: str) -> None:
        async def navigate() -> None:
            result = await self.send("Page.navigate", {"url": url})
            if result.get("errorText"):
                raise CDPError(f"navigation to {url} failed: {result['errorText']}")

        await self._until_loaded(navigate)

    async def _node(self, selector: str) -> int:
        root = await self.send("DOM.getDocument", {"depth": 0})
        found = await self.send("DOM.querySelector",
                                {"nodeId": root["root"]["nodeId"], "selector": selector})
        if not found.get("nodeId"):
            raise CDPError(f"no element matches {selector!r}")
        return int(found["nodeId"])

    async def type_and_enter(self, selector: str, text: str) -> None:
        """Focus a field, type ``text`` and press Enter, waiting for the page that follows."""
        await self.send("DOM.focus", {"nodeId": await self._node(selector)})
        await self.send("Input.insertText", {"text": text})

        async def enter() -> None:
            key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
            await self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": "\r", **key})
            await self.send("Input.dispatchKeyEvent", {"type": "keyUp", **key})

        await self._until_loaded(enter)

    async def click(self, selector: str) -> None:
        """Click the middle of an element and wait for the page that follows."""
        box = await self.send("DOM.getBoxModel", {"nodeId": await self._node(selector)})
        quad = box["model"]["content"]
        x, y = (quad[0] + quad[4]) / 2, (quad[1] + quad[5]) / 2

        async def press() -> None:
            for kind in ("mousePressed", "mouseReleased"):
                await self.send("Input.dispatchMouseEvent",
                                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

        await self._until_loaded(press)

    async def html(self) -> str:
        """The document as it stands (DOM domain: works with JavaScript disabled)."""
        root = await self.send("DOM.getDocument", {"depth": 0})
        out = await self.send("DOM.getOuterHTML", {"nodeId": root["root"]["nodeId"]})
        return str(out["outerHTML"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate",
                                 {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} failed: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        """The whole page, not only the viewport, as PNG."""
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send("Page.captureScreenshot",
                               {"format": "png", "clip": clip, "captureBeyondViewport": True})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


class Browser:
    """A headless Chromium process and the DevTools connection to it."""

    def __init__(self, process: asyncio.subprocess.Process, connection: Connection,
                 log: deque[bytes]) -> None:
        self._process = process
        self._c = connection
        self.log = log

    @classmethod
    @asynccontextmanager
    async def launch(cls, executable: str) -> AsyncIterator[Browser]:
        with tempfile.TemporaryDirectory(prefix="gateway-chromium-") as profile:
            process = await asyncio.create_subprocess_exec(
                executable, *FLAGS, f"--user-data-dir={profile}", "about:blank",
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            log: deque[bytes] = deque(maxlen=50)
            drain: asyncio.Task[None] | None = None
            try:
                url = await _devtools_url(process, log)
                drain = asyncio.create_task(_drain(process, log), name="chromium-stderr")
                async with aiohttp.ClientSession() as http:
                    ws = await http.ws_connect(url, max_msg_size=0)
                    browser = cls(process, Connection(ws), log)
                    try:
                        yield browser
                    finally:
                        await browser._close()
            finally:
                await _stop(process)
                if drain is not None:
                    drain.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await drain

    async def new_page(self, width: int = 1440, height: int = 900) -> Page:
        target = await self._c.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._c.send("Target.attachToTarget",
                                      {"targetId": target["targetId"], "flatten": True})
        page = Page(self._c, attached["sessionId"])
        for domain in ("Page.enable", "DOM.enable", "Network.enable", "Runtime.enable"):
            await page.send(domain)
        await page.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1,
                         "mobile": False})
        return page

    async def _close(self) -> None:
        with contextlib.suppress(CDPError, TimeoutError, aiohttp.ClientError):
            await self._c.send("Browser.close")
        await self._c.close()


async def _devtools_url(process: asyncio.subprocess.Process, log: deque[bytes]) -> str:
    assert process.stderr is not None
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while line := await process.stderr.readline():
                log.append(line)
                if match := _LISTENING.search(line):
                    return match.group(1).decode()
    except TimeoutError:
        pass
    tail = b"".join(log).decode(errors="replace")
    raise CDPError(f"Chromium did not announce its DevTools address; it said:\n{tail}")


async def _drain(process: asyncio.subprocess.Process, log: deque[bytes]) -> None:
    """Keep reading stderr so Chromium never blocks on a full pipe."""
    assert process.stderr is not None
    while line := await process.stderr.readline():
        log.append(line)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
