"""Seeded random damage for the fuzz tests: JSON values changed at random places, bytes garbled,
and the valid upstream answers the damage starts from.

``FUZZ_SEED`` in the environment (0 unless set) shifts every test's generator, so a search past
the default seed is one variable away, and a failure comes back on every run with the same seed.
"""

from __future__ import annotations

import copy
import logging
import os
import random
from dataclasses import replace
from typing import Any

import pytest

from tests.fake_provider import Answer

ROUNDS = int(os.environ.get("FUZZ_ROUNDS", "150"))
NEVER_OPEN = {"failure_threshold": 10_000, "min_calls": 10_000}
"""Failover settings whose breakers never rest an upstream: every request meets the damage."""

ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2**63, -(2**63), 1e308, -1e-308, 0.5, "", "x", "auto", "\u0000",
    "é" * 3, "\U0001f600", "a" * 5000, [], [None], [[[]]], {}, {"": {}}, {"role": "user"},
    [{"type": "text"}], [{"type": "image_url", "image_url": {}}], {"type": "function"},
]


def fuzz_rng(offset: int) -> random.Random:
    """One test's generator: ``FUZZ_SEED`` (0 unless set) plus the test's own offset."""
    return random.Random(int(os.environ.get("FUZZ_SEED", "0")) + offset)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: keys of objects and indices of lists, at any depth."""
    found = [at]
    if isinstance(value, dict):
        for key, inner in value.items():
            found += paths(inner, (*at, key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            found += paths(inner, (*at, i))
    return found


def damaged(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy of ``body`` with one to three changes at random places: a value swapped for an
    odd one, a field or item dropped, an unknown field or an extra item added."""
    out = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        places = [p for p in paths(out) if p]
        if not places:
            break
        place = rng.choice(places)
        parent = out
        for step in place[:-1]:
            parent = parent[step]
        last = place[-1]
        action = rng.random()
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.8:
            del parent[last]
        elif isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 9)}"] = copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            parent.append(copy.deepcopy(rng.choice(ODD_VALUES)))
    return out


def damaged_answer(answer: Answer[Any], rng: random.Random) -> Answer[Any]:
    """``answer`` with its body and some of its stream events damaged; Anthropic's events are
    (name, data) pairs, Gemini's plain objects."""
    events = []
    for event in answer.events:
        if rng.random() < 0.3:
            event = (event[0], damaged(event[1], rng)) if isinstance(event, tuple) \
                else damaged(event, rng)
        events.append(event)
    return replace(answer, body=damaged(answer.body, rng), events=events)


def garbled(data: bytes, rng: random.Random) -> bytes:
    """``data`` with a few bytes changed, dropped or repeated: broken framing, half a line,
    invalid UTF-8."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out))
        action = rng.random()
        if action < 0.4:
            out[at] = rng.randrange(256)
        elif action < 0.7:
            del out[at: at + rng.randint(1, 8)]
        else:
            out[at:at] = out[max(0, at - 8): at]
    return bytes(out)


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:3]


COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "up-small",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None, "message": {
        "role": "assistant", "content": "Four.", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 1}'}}]}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
              "prompt_tokens_details": {"cached_tokens": 0}},
}
CHUNKS: list[dict[str, Any]] = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-small",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-small",
     "choices": [{"index": 0, "delta": {"content": "Four."}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-small",
     "choices": [{"index": 0, "delta": {"tool_calls": [
         {"index": 0, "id": "call_1", "type": "function",
          "function": {"name": "add", "arguments": "{}"}}]}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-small",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "up-small",
     "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
]


# Valid request bodies of each endpoint, the damage's starting points.
CHAT: dict[str, Any] = {
    "model": "small",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": "{\"a\": 2, \"b\": 2}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "tools": [{"type": "function", "function": {
        "name": "add", "description": "Adds.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}],
    "tool_choice": "auto",
    "temperature": 0.2, "top_p": 0.9, "max_tokens": 50, "n": 1, "seed": 7, "stop": ["\n\n"],
    "response_format": {"type": "json_object"}, "user": "u1",
    "stream_options": {"include_usage": True},
}
EMBEDDINGS: dict[str, Any] = {"model": "local", "input": ["one", "two"], "encoding_format": "float"}
MESSAGES: dict[str, Any] = {  # Anthropic's Messages API
    "model": "small", "max_tokens": 50,
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 2?"}, {
            "type": "image", "source": {"type": "base64", "media_type": "image/png",
                                        "data": "iVBORw0KGgo="}}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Add.", "signature": "c2ln"},
            {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "4"}]},
            {"type": "text", "text": "And 3 + 3?"}]},
    ],
    "tools": [{"name": "add", "description": "Adds.",
               "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}}}],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "temperature": 0.2, "top_p": 0.9, "top_k": 5, "stop_sequences": ["\n\n"],
    "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
}
RESPONSES: dict[str, Any] = {  # OpenAI's Responses API
    "model": "small", "instructions": "Be brief.", "max_output_tokens": 50,
    "input": [
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "What is 2 + 2?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
        {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{\"a\": 2}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "4"},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    "tools": [{"type": "function", "name": "add", "description": "Adds.", "strict": False,
               "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}],
    "tool_choice": "auto", "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": True,
    "text": {"format": {"type": "json_schema", "name": "sum",
                        "schema": {"type": "object"}}},
    "metadata": {"k": "v"}, "store": True, "reasoning": {"effort": "low"}, "user": "u1",
}
