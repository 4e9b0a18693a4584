"""Tests for gateway/__main__.py as a real process: every mistake is one line on stderr with
the right exit status (2 for usage), a busy port is caught before any key is printed, and the
admin commands need only the store, never creating one."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.config import parse
from gateway.core.tenant_settings import TenantSettings
from gateway.tenants.context import open_store

pytestmark = pytest.mark.timeout(60)

CONFIG = """
[server]
data_dir = "data"
[[providers]]
name = "groq"
kind = "openai"
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_API_KEY"
[[models]]
name = "small"
provider = "groq"
tier = "cheap"
[embedder]
enabled = false
"""


def _gateway(cwd: Path, *argv: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.startswith("GATEWAY_")} | extra_env
    return subprocess.run([sys.executable, "-m", "gateway", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=50, check=False)


def _one_line_error(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_bad_log_level_is_one_line_naming_it_with_status_2(tmp_path: Path) -> None:
    line = _one_line_error(_gateway(tmp_path, "--log-level", "LOUD", "tenants", "list"), 2)
    assert "'LOUD'" in line and "INFO" in line


def test_a_bad_log_level_from_the_environment_is_one_line_naming_it(tmp_path: Path) -> None:
    line = _one_line_error(_gateway(tmp_path, "tenants", "list", GATEWAY_LOG_LEVEL="loud"), 2)
    assert "GATEWAY_LOG_LEVEL" in line and "'loud'" in line


def test_admin_commands_refuse_to_create_a_store_and_say_what_to_pass(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _gateway(elsewhere, "tenants", "create", "acme", "--config",
                      str(tmp_path / "gateway.toml"))
    line = _one_line_error(result, 2)
    assert f"no gateway store at {tmp_path / 'data' / 'gateway.sqlite3'}" in line
    assert "--config" in line
    line = _one_line_error(_gateway(elsewhere, "keys", "list"), 2)  # the embedded default
    assert str(elsewhere / "data") in line
    assert not (tmp_path / "data").exists() and not (elsewhere / "data").exists()


def test_admin_commands_need_the_store_but_no_provider_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    settings = parse({"server": {"data_dir": str(tmp_path / "data")},
                      "providers": [{"name": "demo", "kind": "demo"}],
                      "models": [{"name": "m", "provider": "demo"}]},
                     env={}, base_dir=tmp_path, source="<test>")

    async def first_start() -> None:  # what `gateway serve` does to the store on its first start
        store, _ = await open_store(TenantSettings(), settings.server.data_dir)
        await store.close()

    asyncio.run(first_start())
    serving = _gateway(tmp_path, "serve", "--config", str(config))
    assert "GROQ_API_KEY is not set" in _one_line_error(serving, 2)  # serving needs it
    made = _gateway(tmp_path, "tenants", "create", "acme", "--config", str(config))
    assert made.returncode == 0, made.stderr
    listed = _gateway(tmp_path / "data", "tenants", "list", "--config", str(config))
    assert listed.returncode == 0 and "acme" in listed.stdout


def test_a_busy_port_is_one_line_before_any_key_is_made(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(CONFIG.replace('api_key_env = "GROQ_API_KEY"', ""))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _gateway(tmp_path, "serve", "--config", "gateway.toml", "--port", str(port))
    line = _one_line_error(result, 1)
    assert f"port {port} on 127.0.0.1 is already in use" in line and "--port" in line
    assert result.stdout == ""  # no admin key, no tenant key
    assert not (tmp_path / "data").exists()


def test_routes_build_over_an_existing_file_is_a_usage_error(tmp_path: Path) -> None:
    data = tmp_path / "examples.jsonl"
    data.write_text('{"text": "hello", "route": "greeting"}\n')
    out = tmp_path / "routes.toml"
    out.write_text("# mine\n")
    line = _one_line_error(_gateway(tmp_path, "--log-level", "warning", "routes", "build",
                                    "--data", str(data), "--out", str(out),
                                    "--default-tier", "cheap"), 2)
    assert f"{out}: already exists (use --force to overwrite)" in line
    assert out.read_text() == "# mine\n"


def test_a_pairs_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text("{not json")
    line = _one_line_error(_gateway(tmp_path, "--log-level", "error", "cache", "eval",
                                    "--pairs", str(pairs)), 2)
    assert str(pairs) in line
    missing = _one_line_error(_gateway(tmp_path, "--log-level", "error", "cache", "eval",
                                       "--pairs", str(tmp_path / "none.json")), 1)
    assert "none.json" in missing and "No such file" in missing


def test_tenants_create_with_init_makes_a_new_deployments_store(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(CONFIG)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _gateway(elsewhere, "tenants", "create", "acme", "--init", "--config",
                      str(tmp_path / "gateway.toml"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "data" / "gateway.sqlite3").exists()
    listed = _gateway(elsewhere, "tenants", "list", "--config", str(tmp_path / "gateway.toml"))
    assert listed.returncode == 0 and "acme" in listed.stdout


NOT_UTF8 = b"\x8d\xff binary, not text"


def test_a_file_that_is_not_utf8_text_is_one_line_naming_it(tmp_path: Path) -> None:
    """A binary file passed by mistake, as the configuration, the routes file or the learning
    data: status 2 and the file's name, not a UnicodeDecodeError's traceback."""
    binary = tmp_path / "picture.png"
    binary.write_bytes(NOT_UTF8)
    for argv in (("serve", "--config", str(binary)),
                 ("routes", "check", "--routes", str(binary)),
                 ("learn", "replay", "--data", str(binary))):
        line = _one_line_error(_gateway(tmp_path, *argv), 2)
        assert f"{binary}: cannot read" in line and "not UTF-8 text" in line, argv


def test_a_port_out_of_range_is_a_usage_error_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text(CONFIG.replace('api_key_env = "GROQ_API_KEY"', ""))
    for port in ("70000", "-5"):
        result = _gateway(tmp_path, "serve", "--config", "gateway.toml", "--port", port)
        line = _one_line_error(result, 2)
        assert f"--port: expected a port number from 0 to 65535, got '{port}'" in line
        assert result.stdout == ""  # no key printed for a gateway that never listened
    assert not (tmp_path / "data").exists()


def test_a_budget_of_nan_inf_or_beyond_a_float_is_refused_not_stored_as_unlimited(
    tmp_path: Path,
) -> None:
    """``--daily-budget nan`` parsed, passed the ``< 0`` check and was stored as null: a
    tenant its operator meant to cap had no budget at all (and a huge integer was a trace)."""
    (tmp_path / "gateway.toml").write_text(CONFIG)
    made = _gateway(tmp_path, "tenants", "create", "acme", "--init", "--config", "gateway.toml")
    assert made.returncode == 0, made.stderr
    for value in ("nan", "inf", "1" + "0" * 400):
        for argv in (("tenants", "create", "other"), ("tenants", "update", "acme")):
            result = _gateway(tmp_path, *argv, "--daily-budget", value,
                              "--config", "gateway.toml")
            assert "limits.daily_budget_usd" in _one_line_error(result, 1), (argv, value)
    listed = _gateway(tmp_path, "tenants", "list", "--json", "--config", "gateway.toml")
    assert listed.returncode == 0 and "other" not in listed.stdout
    assert '"daily_budget_usd":null' in listed.stdout  # acme as created: no budget was set


def test_an_evaluation_without_the_model_says_how_to_build_it(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.json"
    pairs.write_text('[{"text_a": "a cat", "text_b": "a dog", "label": 0}]')
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"text": "hello", "route": "greeting"}\n')
    absent = tmp_path / "no-model"
    for argv in (("cache", "eval", "--pairs", str(pairs)),
                 ("routes", "eval", "--data", str(examples))):
        result = _gateway(tmp_path, "--log-level", "error", *argv, "--model-dir", str(absent))
        line = _one_line_error(result, 2)
        assert f"no model.onnx in {absent}" in line and "embedder_worker.build_model" in line


def test_a_database_or_redis_url_that_does_not_parse_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    """A bracket left open or a port beyond 65535 in the URL: before, urllib's ValueError (or
    asyncio's OverflowError at connect) was a traceback."""
    for url in ("postgresql://app:s3cret-pw@[db/gateway",
                "postgresql://app:s3cret-pw@db:99999/gateway",
                "postgresql://app:s3cret-pw@db:port/gateway"):
        result = _gateway(tmp_path, "migrate", GATEWAY_DATABASE_URL=url)
        line = _one_line_error(result, 2)
        assert "GATEWAY_DATABASE_URL" in line and "s3cret" not in result.stderr, url
    for url in ("redis://:s3cret-pw@[cache/0", "redis://:s3cret-pw@cache:70000/0"):
        result = _gateway(tmp_path, "tenants", "list", GATEWAY_REDIS_URL=url)
        line = _one_line_error(result, 2)
        assert "GATEWAY_REDIS_URL" in line and "s3cret" not in result.stderr, url
