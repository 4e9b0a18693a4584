"""What refusing JSON nested too deep costs on the request path (gateway/core/json_depth.py).

    .venv/bin/python bench/bench_json_depth.py [--rounds 2000]

Every client body, provider answer and stream event is read with ``json_depth.loads`` instead of
``orjson.loads``: a text longer than 256 bytes holding an object or an array is also checked for
its depth, by walking its containers in Python below 16 kB and by writing it once, wrapped in
126 lists, above. Measured on four bodies side by side in one run (a one-line chat, a chat with a
1 kB system prompt, a stream chunk, an agent's conversation of 400 messages and 20 tools, about
240 kB): the mean per read, best of 5 rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from gateway.core.json_depth import loads

CHUNK = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "Four."}, "finish_reason": None}]}


def _agent_body() -> dict[str, Any]:
    messages: list[Any] = [{"role": "user", "content": "Tidy the repository."}]
    for i in range(200):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "shell", "arguments": '{"cmd": "ls -la"}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{i}", "content": "x" * 1000})
    tool = {"type": "function", "function": {"name": "shell", "parameters": {
        "type": "object", "properties": {"cmd": {"type": "string"}}}}}
    return {"model": "auto", "messages": messages, "tools": [tool] * 20}


BODIES = {
    "one-line chat": orjson.dumps({"model": "auto", "messages": [
        {"role": "user", "content": "Write a haiku about the sea, please, in English."}]}),
    "chat, system prompt": orjson.dumps({"model": "auto", "temperature": 0.2, "messages": [
        {"role": "system", "content": "You are a careful assistant. " * 40},
        {"role": "user", "content": "Summarise the plot of Hamlet in three sentences."}]}),
    "stream chunk": orjson.dumps(CHUNK),
    "chat answer, OpenAI's usage details": orjson.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I "
                     "help you today?", "refusal": None}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
        "system_fingerprint": "fp_1"}),
    "agent conversation": orjson.dumps(_agent_body()),
}


def _mean_us(read: Callable[[bytes], Any], raw: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds):
            read(raw)
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    print(f"{'body':<36} {'bytes':>8} {'orjson.loads us':>16} {'json_depth.loads us':>20}")
    for name, raw in BODIES.items():
        plain, checked = _mean_us(orjson.loads, raw, rounds), _mean_us(loads, raw, rounds)
        print(f"{name:<36} {len(raw):>8} {plain:>16.2f} {checked:>20.2f}")


if __name__ == "__main__":
    main()
