"""A gateway in front of one fake upstream of each wire format, for the dialect tests.

Models: ``gpt`` (OpenAI-compatible fake), ``gemini`` (Gemini fake) and ``claude`` (Anthropic
fake), each served by its provider alone. ``Upstreams`` scripts the three fakes alike: ``say``
a text, ``call`` a tool, and read back the bodies each received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from tests import fake_anthropic as fa
from tests import fake_gemini as fg
from tests.conftest import Config, GatewayFactory, model, openai_provider
from tests.fake_anthropic import FakeAnthropic, fake_anthropic_app
from tests.fake_gemini import FakeGemini, fake_gemini_app
from tests.fake_openai import FakeOpenAI, Reply

Json = dict[str, Any]
ENV = {"GEMINI_KEY": "test-gemini-key", "ANTHROPIC_KEY": "test-anthropic-key"}
MODELS = ("gpt", "gemini", "claude")


@dataclass
class Upstreams:
    client: TestClient
    openai: FakeOpenAI
    gemini: FakeGemini
    anthropic: FakeAnthropic

    def say(self, model_name: str, text: str) -> None:
        if model_name == "gpt":
            self.openai.script.append(Reply(text=text))
        elif model_name == "gemini":
            self.gemini.script.append(fg.text(text))
        else:
            self.anthropic.script.append(fa.text(text))

    def call(self, model_name: str, name: str, args: Json) -> None:
        if model_name == "gpt":
            call = {"id": "call_w1", "type": "function",
                    "function": {"name": name, "arguments": orjson.dumps(args).decode()}}
            self.openai.script.append(Reply(tool_call=call))
        elif model_name == "gemini":
            self.gemini.script.append(fg.function_calls([(name, args)]))
        else:
            self.anthropic.script.append(fa.tool_use([(name, args)]))

    def last_body(self, model_name: str) -> Json:
        if model_name == "gpt":
            return self.openai.requests[-1]
        fake = self.gemini if model_name == "gemini" else self.anthropic
        body: Json = fake.requests[-1].body
        return body

    def url(self, path: str = "") -> str:
        return str(self.client.make_url(path))


def three_upstreams_config(openai_url: str, gemini_url: str, anthropic_url: str) -> Config:
    return {
        "providers": [
            openai_provider("oai", openai_url),
            {"name": "gem", "kind": "gemini", "base_url": gemini_url, "api_key_env": "GEMINI_KEY"},
            {"name": "ant", "kind": "anthropic", "base_url": anthropic_url,
             "api_key_env": "ANTHROPIC_KEY"},
        ],
        "models": [
            model("gpt", "oai", upstream_model="gpt-up"),
            model("gemini", "gem", upstream_model="gemini-up"),
            model("claude", "ant", upstream_model="claude-up"),
        ],
    }


@pytest.fixture
async def upstreams(
    aiohttp_server: AiohttpServer, make_gateway: GatewayFactory,
    fake_openai: tuple[FakeOpenAI, str],
) -> Upstreams:
    openai_fake, openai_url = fake_openai
    gemini, anthropic = FakeGemini(), FakeAnthropic()
    gemini_server = await aiohttp_server(fake_gemini_app(gemini))
    anthropic_server = await aiohttp_server(fake_anthropic_app(anthropic))
    config = three_upstreams_config(openai_url, str(gemini_server.make_url("/v1beta")),
                                    str(anthropic_server.make_url("/v1")))
    client = await make_gateway(config, env=ENV)
    return Upstreams(client, openai_fake, gemini, anthropic)


@pytest.fixture(params=MODELS)
def upstream_model(request: pytest.FixtureRequest) -> str:
    """Each upstream wire format in turn, by the model it serves."""
    name: str = request.param
    return name
