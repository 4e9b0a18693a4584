"""Configuration layers (gateway/core/layering.py, through gateway/core/config.py's ``load``):
a user's file over the embedded default, ``GATEWAY_*`` variables over both, and ``make run``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, load
from gateway.core.layering import environment_layer, layer, layer_file

ROOT = Path(__file__).resolve().parent.parent


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_a_file_holding_only_a_port_is_laid_over_the_default(tmp_path: Path) -> None:
    settings = load(_file(tmp_path, "[server]\nport = 8380\n"), env={})
    assert settings.server.port == 8380
    assert settings.server.host == "127.0.0.1"
    assert [p.name for p in settings.providers] == ["demo"]
    assert {m.name for m in settings.models} == {"demo-cheap", "demo-reasoning"}


def test_a_table_merges_key_by_key() -> None:
    below = {"server": {"host": "h", "port": 1}, "embedder": {"workers": 1, "model_dir": "m"}}
    above = {"server": {"port": 2}, "embedder": {"workers": 3}}
    assert layer(below, above) == {"server": {"host": "h", "port": 2},
                                   "embedder": {"workers": 3, "model_dir": "m"}}
    assert below["server"] == {"host": "h", "port": 1}, "the layers themselves are not changed"


def test_a_list_or_a_value_replaces_that_part_whole() -> None:
    below = {"routing": {"tier_order": ["cheap", "reasoning"]}, "models": [{"name": "a"}],
             "server": {"port": 1}}
    above = {"routing": {"tier_order": ["reasoning"]}, "models": [{"name": "b"}],
             "server": "not a table"}
    assert layer(below, above) == above


def test_a_file_giving_providers_and_models_replaces_the_defaults(tmp_path: Path) -> None:
    path = _file(tmp_path, """
[[providers]]
name = "local"
kind = "openai"
base_url = "http://127.0.0.1:11434/v1"
[[models]]
name = "llama"
provider = "local"
tier = "cheap"
""")
    settings = load(path, env={"GROQ_API_KEY": "gsk-1"})
    assert [p.name for p in settings.providers] == ["local"], "groq's key no longer enables it"
    assert [m.name for m in settings.models] == ["llama"]


def test_default_models_follow_the_providers_a_file_keeps(tmp_path: Path) -> None:
    path = _file(tmp_path, """
[[providers]]
name = "groq"
kind = "openai"
base_url = "https://api.groq.com/openai/v1"
api_key_env = "GROQ_API_KEY"
""")
    settings = load(path, env={"GROQ_API_KEY": "gsk-1", "OPENAI_API_KEY": "sk-1"})
    assert [p.name for p in settings.providers] == ["groq"], "a dropped default provider is gone"
    assert {m.name for m in settings.models} == {"llama-3.1-8b-instant",
                                                 "llama-3.3-70b-versatile"}


def test_rule_three_applies_only_when_the_file_gives_no_models() -> None:
    default = {"providers": [{"name": "a"}, {"name": "b"}],
               "models": [{"name": "ma", "provider": "a"}, {"name": "mb", "provider": "b"}]}
    assert layer_file(default, {"providers": [{"name": "b"}]})["models"] == [
        {"name": "mb", "provider": "b"}]
    mine = [{"name": "x", "provider": "b"}]
    assert layer_file(default, {"providers": [{"name": "b"}], "models": mine})["models"] == mine
    assert layer_file(default, {"server": {"port": 1}})["models"] == default["models"]


def test_relative_paths_follow_the_layer_that_gave_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    path = _file(folder, '[server]\ndata_dir = "state"\n')
    settings = load(path, env={})
    assert settings.server.data_dir == folder / "state"
    assert settings.embedder is not None
    assert settings.embedder.model_dir == workdir / "models/all-MiniLM-L6-v2"


def test_environment_variables_set_the_common_things(tmp_path: Path) -> None:
    path = _file(tmp_path, "[server]\nport = 8380\nhost = '10.0.0.1'\n")
    env = {"GATEWAY_CONFIG": str(path), "GATEWAY_PORT": "9001", "GATEWAY_DATA_DIR": "/var/gw",
           "GATEWAY_METRICS_TOKEN": "scrape-secret-123456"}
    settings = load(None, env=env)
    assert settings.source.startswith(str(path)), "GATEWAY_CONFIG names the file"
    assert settings.server.port == 9001, "the environment wins over the file"
    assert settings.server.host == "10.0.0.1"
    assert settings.server.data_dir == Path("/var/gw")
    assert settings.observability.metrics_token == "scrape-secret-123456"
    assert "scrape-secret" not in repr(settings)
    assert load(None, env={"GATEWAY_HOST": "0.0.0.0"}).server.host == "0.0.0.0"


def test_an_empty_variable_counts_as_unset() -> None:
    assert environment_layer({"GATEWAY_PORT": " ", "GATEWAY_METRICS_TOKEN": ""}) == {}


def test_a_bad_variable_fails_naming_it_and_its_value() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_PORT: expected a port number, got 'eighty'"):
        load(None, env={"GATEWAY_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"server\.port: expected a port number"):
        load(None, env={"GATEWAY_PORT": "70000"})


def test_the_log_level_comes_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "GATEWAY_LOG_LEVEL": "debug", "GATEWAY_PORT": "8381",
           "GATEWAY_CONFIG": str(_file(tmp_path, "[server]\ncolour = 'red'\n"))}
    done = subprocess.run([sys.executable, "-m", "gateway", "serve"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "environment overrides: server.port" in done.stderr, "a DEBUG line is shown"
    assert "server.colour: unknown key" in done.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_passes_port_host_and_config() -> None:
    done = subprocess.run(["make", "-n", "run", "PORT=8380", "HOST=0.0.0.0", "CONFIG=my.toml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    serve = [line for line in done.stdout.splitlines() if "gateway serve" in line]
    assert serve and serve[-1].split("gateway serve", 1)[1].split() == [
        "--config", "my.toml", "--port", "8380", "--host", "0.0.0.0"]
