"""The files of a model directory, shared by the builder, the worker and the supervisor.

A constants-only module so that the gateway process (supervisor, client) can name them without
importing onnx, onnxruntime or tokenizers.
"""

from __future__ import annotations

from pathlib import Path

MODEL_FILE = "model.onnx"  # float32 encoder graph
INT8_FILE = "model.int8.onnx"  # dynamic per-channel int8 copy, built on demand
TOKENIZER_FILE = "tokenizer.json"  # Hugging Face tokenizers format
CONFIG_FILE = "embedder.json"  # name, dim, pooling, normalize, max_length, query_prefix


def missing_model(model_dir: Path) -> str | None:
    """Why ``model_dir`` holds no model, as one line saying how to build it; None when it does."""
    if (model_dir / MODEL_FILE).is_file():
        return None
    return (f"no {MODEL_FILE} in {model_dir}: build it with "
            f"`python -m embedder_worker.build_model --out {model_dir}`")
