"""The Gemini adapter: OpenAI chat completions to Google's ``generateContent`` and back.

Requests: system and developer messages become ``systemInstruction``; user and assistant
messages become ``user`` and ``model`` contents (same-role neighbours merged); assistant tool
calls become ``functionCall`` parts and tool messages ``functionResponse`` parts, named from the
call they answer; ``data:`` images, audio and files become ``inlineData`` (``parts``).
Sampling parameters go to ``generationConfig``; JSON schemas (``response_format`` and tool
parameters) are cut down to the subset Gemini accepts (``gemini_schema``). Answers come back
as a ``chat.completion`` or as chunks read from ``:streamGenerateContent?alt=sse``, the first
chunk of each event with the usage Gemini counted so far (``USAGE_SO_FAR``).

Choices made here:

- A prompt Gemini blocks (``promptFeedback.blockReason``, no candidates) is an
  ``UpstreamFailure(CLIENT_ERROR, status=400, code content_filter)``, as Azure OpenAI answers a
  filtered prompt: nothing was generated, so no empty answer gets cached or billed as one.
  A blocked *answer* (finish reason SAFETY and the like) is a normal ``content_filter`` choice.
- Thought signatures, which Gemini 3 requires back on the function calls of the current turn,
  travel on each tool call as ``extra_content.google.thought_signature`` (the field Google's
  own OpenAI-compatible endpoint uses) and are sent back from there.
- Gemini answers a bad API key or an unsupported region with 400 or a ``FAILED_PRECONDITION``:
  those are failures of the deployment, not of the request, so they become ``SERVER_ERROR``.
  A 429's ``RetryInfo.retryDelay`` stands in for the missing ``Retry-After`` header.
- What Gemini cannot express is ``UpstreamFailure(UNSUPPORTED)`` (failover tries the next
  deployment): media by http(s) URL or file id, part types without an equivalent, recursive
  schemas, only system messages. Input malformed for any provider is ``InvalidRequest``.

Lossy: ``presence_penalty``, ``frequency_penalty``, ``logprobs``, ``parallel_tool_calls``,
``reasoning_effort`` and ``user`` are not sent; thought signatures on text parts are dropped.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.core import json_depth
from gateway.core.answer import (
    USAGE_SO_FAR,
    Completion,
    Deployment,
    Json,
    Usage,
    as_index,
    as_str,
    assistant_message,
    chunk,
    completion,
    completion_id,
    event_json,
    now_s,
    reported_usage,
    token_count,
    usage_chunk,
)
from gateway.core.chat import ChatRequest, Message
from gateway.core.errors import FailureKind, InvalidRequest, UpstreamFailure
from gateway.upstream.calls import Upstream, error_message
from gateway.upstream.providers.base import refuse_native_only
from gateway.upstream.providers.gemini_schema import gemini_schema
from gateway.upstream.providers.parts import (
    InlineData,
    file_data,
    function_call,
    image_url,
    inline_data,
    unsupported,
)

_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"} | dict.fromkeys(
    ("SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"),
    "content_filter",
)
_DEPLOYMENT_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


class GeminiProvider:
    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def _url(self, deployment: Deployment, method: str) -> str:
        model = deployment.model.upstream_model.removeprefix("models/")
        return f"{deployment.provider.base_url}/models/{model}:{method}"

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        p = deployment.provider
        headers = {"Content-Type": "application/json", **p.headers}
        if p.api_key:
            headers["x-goog-api-key"] = p.api_key
        return headers

    async def complete(self, request: ChatRequest, deployment: Deployment) -> Completion:
        body = request_body(request)
        try:
            resp = await self.upstream.post_json(
                self._url(deployment, "generateContent"),
                headers=self._headers(deployment),
                body=body,
                timeouts=deployment.provider.timeouts,
            )
        except UpstreamFailure as failure:
            _refine(failure)
            raise
        return completion_from(resp.body, deployment.model.upstream_model)

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncGenerator[Json, None]:
        body = request_body(request)
        state = _Stream(completion_id(), now_s(), deployment.model.upstream_model)
        try:
            async with self.upstream.open_sse(
                self._url(deployment, "streamGenerateContent") + "?alt=sse",
                headers=self._headers(deployment),
                body=body,
                timeouts=deployment.provider.timeouts,
            ) as events:
                async for event in events:
                    for out in state.feed(event_json(event.data)):
                        yield out
        except UpstreamFailure as failure:
            _refine(failure)
            raise
        for out in state.finish():
            yield out


# --- request -------------------------------------------------------------------------------


def request_body(request: ChatRequest) -> bytes:
    """The ``GenerateContentRequest`` for ``request``.

    Raises ``InvalidRequest`` for malformed input, ``UpstreamFailure(UNSUPPORTED)`` for what
    Gemini cannot express.
    """
    refuse_native_only(request)
    system, contents = _contents(request.messages)
    if not contents:
        raise unsupported("Gemini needs at least one message besides system messages.")
    body: Json = {"contents": contents, **_tools(request)}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    return orjson.dumps(body)


def _contents(messages: tuple[Message, ...]) -> tuple[list[Json], list[Json]]:
    names = _call_names(messages)
    system: list[Json] = []
    contents: list[Json] = []
    for i, m in enumerate(messages):
        if m.role in ("system", "developer"):
            system.append({"text": m.text})
            continue
        role, parts = _turn(i, m, names)
        if not parts:
            continue
        # Gemini wants turns to alternate; parallel tool results in particular must share one.
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _call_names(messages: tuple[Message, ...]) -> dict[str, str]:
    """Function name by tool call id: Gemini's function responses are matched by name."""
    names: dict[str, str] = {}
    for m in messages:
        for call in m.tool_calls:
            function = call.get("function")
            name = function.get("name") if isinstance(function, dict) else None
            if isinstance(call.get("id"), str) and isinstance(name, str):
                names[call["id"]] = name
    return names


def _turn(i: int, m: Message, names: Mapping[str, str]) -> tuple[str, list[Json]]:
    if m.role in ("tool", "function"):
        name = m.name if m.role == "function" else names.get(m.tool_call_id or "")
        if name is None:
            where = f"messages[{i}].tool_call_id" if m.role == "tool" else f"messages[{i}].name"
            raise InvalidRequest(
                f"Invalid value for '{where}': it names no earlier tool call.", param=where
            )
        response = {"name": name, "response": _tool_output(m.text)}
        return "user", [{"functionResponse": response}]
    parts = _content_parts(i, m)
    if m.role == "assistant":
        return "model", parts + [_call_part(i, j, c) for j, c in enumerate(m.tool_calls)]
    return "user", parts


def _tool_output(text: str) -> Json:
    # ``response`` must be an object; Gemini's docs name ``output`` for a plain result.
    try:
        value = json_depth.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


def _content_parts(i: int, m: Message) -> list[Json]:
    if isinstance(m.content, str):
        return [{"text": m.content}] if m.content else []
    parts = [_content_part(f"messages[{i}].content[{j}]", p) for j, p in enumerate(m.content or ())]
    return [p for p in parts if p.get("text") != ""]  # Gemini refuses empty text parts


def _content_part(where: str, part: Json) -> Json:
    kind = part.get("type")
    if kind == "text":
        return {"text": str(part.get("text", ""))}
    if kind == "image_url":
        return _inline(inline_data(image_url(part), f"{where}.image_url.url", "Gemini"))
    if kind == "input_audio":
        return _inline(_audio(part, where))
    if kind == "file":
        return _inline(file_data(part, where, "Gemini"))
    raise unsupported(f"Gemini cannot take content parts of type {kind!r} ('{where}').")


def _inline(media: InlineData) -> Json:
    return {"inlineData": {"mimeType": media.media_type, "data": media.data}}


def _audio(part: Json, where: str) -> InlineData:
    audio = part.get("input_audio")
    data = audio.get("data") if isinstance(audio, dict) else None
    fmt = audio.get("format") if isinstance(audio, dict) else None
    if not isinstance(data, str) or not isinstance(fmt, str) or not fmt:
        where = f"{where}.input_audio"
        raise InvalidRequest(
            f"Invalid value for '{where}': expected base64 data and a format.", param=where
        )
    return InlineData(f"audio/{fmt}", data)


def _call_part(i: int, j: int, call: Json) -> Json:
    parsed = function_call(call, f"messages[{i}].tool_calls[{j}].function")
    part: Json = {"functionCall": {"name": parsed.name, "args": parsed.arguments}}
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    if isinstance(signature, str):
        part["thoughtSignature"] = signature
    return part


def _generation_config(request: ChatRequest) -> Json:
    pairs = (
        ("maxOutputTokens", request.max_tokens),
        ("temperature", request.temperature),
        ("topP", request.top_p),
        ("seed", request.seed),
    )
    config: Json = {name: value for name, value in pairs if value is not None}
    if request.stop:
        config["stopSequences"] = list(request.stop)
    if request.n > 1:
        config["candidateCount"] = request.n
    fmt = request.response_format or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
    if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        config["responseSchema"] = gemini_schema(
            spec["schema"], "response_format.json_schema.schema"
        )
    return config


def _tools(request: ChatRequest) -> Json:
    if not request.tools:
        return {}
    declarations = []
    for i, tool in enumerate(request.tools):
        function = tool["function"]
        declaration: Json = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        params = function.get("parameters")
        schema = gemini_schema(params, f"tools[{i}].function.parameters") if params else {}
        # Gemini refuses an OBJECT without properties: a function without arguments has none.
        if schema.get("properties"):
            declaration["parameters"] = schema
        declarations.append(declaration)
    out: Json = {"tools": [{"functionDeclarations": declarations}]}
    choice = request.tool_choice
    config: Json | None = None
    if isinstance(choice, dict):
        config = {"mode": "ANY", "allowedFunctionNames": [choice["function"].get("name")]}
    elif choice is not None:
        config = {"mode": {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]}
    if config:
        out["toolConfig"] = {"functionCallingConfig": config}
    return out


# --- response ------------------------------------------------------------------------------


def completion_from(body: Any, model: str) -> Completion:
    """A ``GenerateContentResponse`` as a ``chat.completion``; raises ``UpstreamFailure``."""
    _raise_embedded_error(body)
    _raise_blocked(body)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "Gemini answered without candidates")
    choices = [_choice(c, i) for i, c in enumerate(candidates) if isinstance(c, dict)]
    return completion(as_str(body.get("modelVersion"), model), choices,
                      _usage(body.get("usageMetadata")))


def _choice(candidate: Json, position: int) -> Json:
    text, calls = _read_parts(candidate)
    return {
        "index": as_index(candidate.get("index"), position),
        "message": assistant_message(text if text or not calls else None, calls),
        "logprobs": None,
        "finish_reason": _finish(candidate.get("finishReason"), bool(calls)),
    }


def _read_parts(candidate: Json) -> tuple[str, list[Json]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[Json] = []
    for part in parts if isinstance(parts, list) else ():
        if not isinstance(part, dict) or part.get("thought"):
            continue  # thought summaries are not the answer
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part))
    return "".join(texts), calls


def _tool_call(part: Json) -> Json:
    call = part["functionCall"]
    out: Json = {
        "id": as_str(call.get("id")) or f"call_{secrets.token_hex(12)}",
        "type": "function",
        "function": {
            "name": as_str(call.get("name")),
            "arguments": orjson.dumps(call.get("args") or {}).decode(),
        },
    }
    if isinstance(part.get("thoughtSignature"), str):
        out["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return out


def _finish(reason: Any, has_calls: bool) -> str:
    if has_calls and reason in (None, "STOP"):
        return "tool_calls"
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def _usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict) or token_count(meta.get("promptTokenCount")) is None:
        return None

    def count(name: str) -> int:
        return token_count(meta.get(name)) or 0

    # Thinking tokens are billed as output, tool-use prompts as input.
    return reported_usage(
        count("promptTokenCount") + count("toolUsePromptTokenCount"),
        count("candidatesTokenCount") + count("thoughtsTokenCount"),
        cached=count("cachedContentTokenCount"),
        reasoning=count("thoughtsTokenCount"),
    )


def _raise_embedded_error(body: Any) -> None:
    if not isinstance(body, dict):
        raise UpstreamFailure(FailureKind.BAD_RESPONSE, "Gemini answered with no JSON object")
    if body.get("error"):
        raise UpstreamFailure(FailureKind.ERROR_IN_BODY, error_message(body, 200), body=body)


def _raise_blocked(body: Json) -> None:
    feedback = body.get("promptFeedback")
    reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if reason and not body.get("candidates"):
        message = f"Gemini blocked the prompt ({reason})."
        error = {"message": message, "type": "invalid_request_error", "code": "content_filter"}
        raise UpstreamFailure(
            FailureKind.CLIENT_ERROR, message, status=400, body={"error": error}
        )


def _refine(failure: UpstreamFailure) -> None:
    """Adjust a failure from Gemini's HTTP status with what its error body says."""
    error = failure.body.get("error") if failure.body else None
    if not isinstance(error, dict):
        return
    listed = error.get("details")
    details = [d for d in listed if isinstance(d, dict)] if isinstance(listed, list) else []
    reasons = {d.get("reason") for d in details if isinstance(d.get("reason"), str)}
    if failure.kind is FailureKind.CLIENT_ERROR and (
        reasons & _DEPLOYMENT_REASONS or error.get("status") == "FAILED_PRECONDITION"
    ):
        failure.kind = FailureKind.SERVER_ERROR
    if failure.retry_after_s is None:
        for d in details:
            match = _DURATION.match(str(d.get("retryDelay", "")))
            if match:
                failure.retry_after_s = float(match.group(1))


# --- streaming -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Candidate:
    tool_calls: int = 0
    finished: bool = False


@dataclass(slots=True)
class _Stream:
    """Translation state of one stream: each event is a whole ``GenerateContentResponse``."""

    chunk_id: str
    created: int
    model: str
    candidates: dict[int, _Candidate] = field(default_factory=dict)
    usage: Usage | None = None

    def feed(self, response: Any) -> list[Json]:
        _raise_embedded_error(response)
        _raise_blocked(response)
        if not self.candidates and isinstance(response.get("modelVersion"), str):
            self.model = response["modelVersion"]
        # Every event repeats the usage so far; the last one is the total.
        self.usage = _usage(response.get("usageMetadata")) or self.usage
        candidates = response.get("candidates")
        out: list[Json] = []
        for position, candidate in enumerate(candidates if isinstance(candidates, list) else ()):
            if isinstance(candidate, dict):
                out.extend(self._candidate(candidate, as_index(candidate.get("index"), position)))
        if out and self.usage is not None:
            # A stream cut before its last event is charged what Gemini had counted (its
            # cache reads and thinking included), not the gateway's guess at the prompt.
            out[0][USAGE_SO_FAR] = self.usage
        return out

    def _candidate(self, candidate: Json, index: int) -> Iterable[Json]:
        state = self.candidates.get(index)
        if state is None:
            state = self.candidates[index] = _Candidate()
            yield self._chunk(index, {"role": "assistant", "content": ""})
        text, calls = _read_parts(candidate)
        if text:
            yield self._chunk(index, {"content": text})
        if calls:
            first = state.tool_calls
            state.tool_calls += len(calls)
            deltas = [{"index": first + k, **call} for k, call in enumerate(calls)]
            yield self._chunk(index, {"tool_calls": deltas})
        reason = candidate.get("finishReason")
        if reason and not state.finished:
            state.finished = True
            yield self._chunk(index, {}, _finish(reason, state.tool_calls > 0))

    def _chunk(self, index: int, delta: Json, finish_reason: str | None = None) -> Json:
        out = chunk(self.chunk_id, self.model, self.created, delta, finish_reason)
        out["choices"][0]["index"] = index
        return out

    def finish(self) -> list[Json]:
        """The closing usage chunk; raises when the stream ended before its finish reason."""
        if not self.candidates:
            raise UpstreamFailure(FailureKind.EMPTY_STREAM, "Gemini stream ended without content")
        if not all(c.finished for c in self.candidates.values()):
            raise UpstreamFailure(FailureKind.CONNECT, "Gemini stream ended before it finished")
        if self.usage is None:
            return []
        return [usage_chunk(self.chunk_id, self.model, self.created, self.usage)]
