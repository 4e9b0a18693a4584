"""Fixtures for the learned-routing tests: the two classes of prompts embedded by the real model.

Test modules load it after the routing fixtures (``pytest_plugins = ["tests.routing_fixtures",
"tests.learning_fixtures"]``) and import the data and helpers from ``tests.learning_helpers``.
"""

from __future__ import annotations

import pytest

from embedder_worker.model import OnnxEmbedder
from tests.learning_helpers import CHAT, TAX, FloatArray


@pytest.fixture(scope="session")
def tax_vectors(onnx_embedder: OnnxEmbedder) -> FloatArray:
    return onnx_embedder.embed(TAX)


@pytest.fixture(scope="session")
def chat_vectors(onnx_embedder: OnnxEmbedder) -> FloatArray:
    return onnx_embedder.embed(CHAT)
