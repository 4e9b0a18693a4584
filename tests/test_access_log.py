"""Tests for gateway/observability/access_log.py: one JSON line per request, no prompt or key unless
asked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from gateway.core.observability_settings import ObservabilitySettings
from gateway.observability.access_log import (
    ACCESS_LOGGER,
    MAX_PROMPT_CHARS,
    AccessEntry,
    access_log_enabled,
    access_log_line,
    configure_access_log,
)

KEY = "gw-" + "Zz9" * 14
ENTRY = AccessEntry(
    ts=1_760_000_000.25, request_id="req_abc", method="POST", path="/v1/chat/completions",
    status=200, latency_ms=412.5, tenant="acme", key_id="key_1a2b", route="code",
    tier="reasoning", model="auto", deployment="groq/llama-3.3-70b-versatile", cache="miss",
    stream=True, attempts=2, upstream_ms=390.0, ttft_ms=120.0, tokens_in=50, tokens_out=200,
    cost=0.0012,
)


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        yield caplog


def test_a_request_becomes_one_json_line_with_its_facts(
    access: pytest.LogCaptureFixture
) -> None:
    access_log_line(ENTRY, ObservabilitySettings(), prompt=f"my key is {KEY}")
    (record,) = access.records
    assert record.name == "gateway.access"
    line = orjson.loads(record.getMessage())
    assert line["request_id"] == "req_abc" and line["tenant"] == "acme"
    assert line["route"] == "code" and line["deployment"] == "groq/llama-3.3-70b-versatile"
    assert line["cache"] == "miss" and line["status"] == 200
    assert line["latency_ms"] == 412.5 and line["cost"] == 0.0012
    assert "prompt" not in line and KEY not in record.getMessage()


def test_the_prompt_is_logged_only_when_configured_and_never_with_a_key(
    access: pytest.LogCaptureFixture
) -> None:
    settings = ObservabilitySettings(access_log_prompts=True)
    access_log_line(ENTRY, settings, prompt=f"my key is {KEY}, \"quoted\"\nnext line")
    access_log_line(ENTRY, settings, prompt="x" * (MAX_PROMPT_CHARS + 500))
    first, second = (orjson.loads(r.getMessage()) for r in access.records)
    assert first["prompt"].startswith('my key is gw-[REDACTED], "quoted"\nnext line')
    assert KEY not in first["prompt"]
    assert len(second["prompt"]) == MAX_PROMPT_CHARS


def test_nothing_is_logged_when_the_access_log_is_off(
    access: pytest.LogCaptureFixture
) -> None:
    access_log_line(ENTRY, ObservabilitySettings(access_log=False))
    assert access.records == []


def test_nothing_is_built_when_the_logger_is_quiet(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("serialised although nobody listens")

    monkeypatch.setattr("gateway.observability.access_log.orjson.dumps", explode)
    with caplog.at_level(logging.WARNING, logger=ACCESS_LOGGER):
        access_log_line(ENTRY, ObservabilitySettings())
    assert caplog.records == []


def test_lines_are_enabled_only_by_the_setting_and_a_listening_logger(
    caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        assert access_log_enabled(ObservabilitySettings())
        assert not access_log_enabled(ObservabilitySettings(access_log=False))
    with caplog.at_level(logging.WARNING, logger=ACCESS_LOGGER):
        assert not access_log_enabled(ObservabilitySettings())


def test_configure_access_log_writes_bare_json_lines_to_its_stream() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = (logger.level, logger.propagate, list(logger.handlers))
    stream = io.StringIO()
    try:
        configure_access_log(stream)
        access_log_line(ENTRY, ObservabilitySettings())
        access_log_line(ENTRY, ObservabilitySettings())
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert orjson.loads(lines[0])["request_id"] == "req_abc"
