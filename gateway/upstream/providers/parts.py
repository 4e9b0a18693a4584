"""Reading OpenAI message parts, for the adapters that translate them (Gemini, Anthropic).

OpenAI carries media as ``data:`` URLs (images may also be web URLs) and an assistant's tool
call arguments as a JSON string; Gemini and Anthropic want base64 payloads with a media type,
and arguments as JSON objects. These helpers do that reading, and sort what they cannot use
into two kinds:

- malformed for every provider (not a URL, arguments that are not a JSON object):
  ``InvalidRequest`` naming the parameter, answered 400 at once;
- valid, but not expressible by the calling adapter (a web URL to a provider that fetches
  none, an uploaded file's id): ``UpstreamFailure(UNSUPPORTED)``, so failover tries the next
  deployment (see ``gateway.upstream.failover``).

Pure functions: no network, disk or environment.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from gateway.core import json_depth
from gateway.core.answer import Json
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure

_WEB_SCHEMES = ("https://", "http://")


@dataclass(frozen=True, slots=True)
class InlineData:
    """Media sent inside the request: its media type and its bytes in base64."""

    media_type: str
    data: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    """An assistant's earlier tool call, its arguments parsed."""

    name: str
    arguments: Json


def unsupported(message: str) -> UpstreamFailure:
    """The failure for a valid request this provider cannot express; another one may."""
    return UpstreamFailure(FailureKind.UNSUPPORTED, message)


def image_url(part: Json) -> Any:
    """The URL of an ``image_url`` part: ``{"url": ...}``, or the bare string some clients send."""
    image = part.get("image_url")
    return image.get("url") if isinstance(image, dict) else image


def is_web_url(value: Any) -> bool:
    return isinstance(value, str) and value[:8].lower().startswith(_WEB_SCHEMES)


def inline_data(url: Any, where: str, provider: str) -> InlineData:
    """The media of a ``data:`` URL, base64-encoded whatever its encoding in the URL.

    ``where`` names the parameter in errors, ``provider`` the adapter that cannot fetch a
    web URL (unsupported); anything else that is not a data URL is an ``InvalidRequest``.
    """
    if is_web_url(url):
        raise unsupported(
            f"{provider} takes no media by URL ('{where}'); send it as a base64 data: URL."
        )
    if not isinstance(url, str) or url[:5].lower() != "data:" or "," not in url:
        raise InvalidRequest(
            f"Invalid value for '{where}': expected a data: URL or an http(s) URL.", param=where
        )
    header, _, payload = url[5:].partition(",")
    params = [p.strip() for p in header.split(";")]
    media_type = params[0].lower() or "text/plain"  # RFC 2397's default
    if "base64" in (p.lower() for p in params[1:]):
        return InlineData(media_type, payload)
    # Percent-encoded data (``data:text/plain,hi%20there``) is valid; providers want base64.
    return InlineData(media_type, base64.b64encode(unquote_to_bytes(payload)).decode("ascii"))


def file_data(part: Json, where: str, provider: str) -> InlineData:
    """The media of a ``file`` part sent inline (``file.file_data``, a data: URL)."""
    file = part.get("file")
    file = file if isinstance(file, dict) else {}
    if file.get("file_data") is None and isinstance(file.get("file_id"), str):
        raise unsupported(
            f"{provider} cannot read files uploaded to OpenAI ('{where}.file.file_id'); "
            "send the file inline as file_data."
        )
    return inline_data(file.get("file_data"), f"{where}.file.file_data", provider)


def function_call(call: Json, where: str) -> FunctionCall:
    """The name and JSON-object arguments of ``call``; ``where`` names it in errors."""
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    try:
        arguments = json_depth.loads(function.get("arguments") or "{}")
    except orjson.JSONDecodeError:  # also what orjson raises for a non-string
        arguments = None
    name = function.get("name")
    if not isinstance(arguments, dict) or not isinstance(name, str):
        raise InvalidRequest(
            f"Invalid value for '{where}': expected a name and JSON object arguments.", param=where
        )
    return FunctionCall(name, arguments)
