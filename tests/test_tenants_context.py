"""The tenants' configuration drawn from the gateway's settings (gateway/tenants/context.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import parse
from gateway.tenants.context import tenants_config


def _settings(kind: str, **prices: float) -> Any:
    provider = {"name": "p", "kind": kind, "base_url": "http://x/v1", "api_key_env": "P_KEY"}
    return parse({"providers": [provider], "embedder": {"enabled": False},
                  "models": [{"name": "m", "provider": "p", **prices}]},
                 env={"P_KEY": "k"}, base_dir=Path("/srv"), source="<test>")


@pytest.mark.parametrize(("kind", "per_mtok"), [("anthropic", 20.0), ("openai", 15.0)])
def test_reservations_price_a_token_at_the_dearest_price_it_can_be_charged(
    kind: str, per_mtok: float
) -> None:
    """Anthropic's 1-hour cache writes (twice the input price unless set) can cost more than
    its output; a provider that never writes for an hour is not reserved for them."""
    settings = _settings(kind, input_price_per_mtok=10.0, output_price_per_mtok=15.0)
    assert tenants_config(settings).cost_per_token == pytest.approx(per_mtok / 1e6)
