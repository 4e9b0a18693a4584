"""The files of a model directory, shared by the builder, the worker and the supervisor.

A constants-only module so that the gateway process (supervisor, client) can name them without
importing onnx, onnxruntime or tokenizers.
"""

from __future__ import annotations

MODEL_FILE = "model.onnx"  # float32 encoder graph
INT8_FILE = "model.int8.onnx"  # dynamic per-channel int8 copy, built on demand
TOKENIZER_FILE = "tokenizer.json"  # Hugging Face tokenizers format
CONFIG_FILE = "embedder.json"  # name, dim, pooling, normalize, max_length, query_prefix
