"""embedder_worker.model and build_model: the in-process embedder against reference vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from embedder_worker import build_model, model_files
from embedder_worker.model import OnnxEmbedder

if TYPE_CHECKING:
    from tests.embedder_fixtures import Reference

pytest_plugins = ["tests.embedder_fixtures"]


def test_embeddings_match_the_reference_on_all_60_sentences(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    vectors = embedder.embed(reference.sentences)
    assert vectors.dtype == np.float32
    assert vectors.shape == (60, 384)
    assert np.abs(vectors - reference.embeddings).max() <= 1e-5


def test_one_text_at_a_time_gives_the_same_vectors_as_padded_batches(
    embedder: OnnxEmbedder, reference: Reference
) -> None:
    alone = np.stack([embedder.embed([s])[0] for s in reference.sentences[:12]])
    batched = embedder.embed(reference.sentences[:12], batch_size=12)
    assert np.abs(alone - batched).max() <= 1e-5


def test_texts_truncate_at_256_tokens_not_the_shipped_128(embedder: OnnxEmbedder) -> None:
    (encoded,) = embedder.encode(["word " * 1000])
    assert encoded.length == 256
    assert embedder.max_length == 256


def test_build_is_idempotent_and_writes_the_embedder_config(model_dir: Path) -> None:
    assert build_model.build(model_dir) is False
    config = json.loads((model_dir / model_files.CONFIG_FILE).read_text())
    assert config["pooling"] == "mean"
    assert config["normalize"] is True
    assert (config["max_length"], config["dim"]) == (256, 384)
    tokenizer = json.loads((model_dir / model_files.TOKENIZER_FILE).read_text())
    assert tokenizer["truncation"]["max_length"] == 256
    assert tokenizer["padding"]["strategy"] == "BatchLongest"


def test_options_override_the_config_file(
    model_dir: Path, embedder: OnnxEmbedder, reference: Reference
) -> None:
    raw = OnnxEmbedder(model_dir, pooling="cls", normalize=False, query_prefix="query: ")
    assert np.array_equal(raw.encode(["x"])[0].ids, embedder.encode(["query: x"])[0].ids)
    vectors = raw.embed(reference.sentences[:4])
    norms = np.linalg.norm(vectors, axis=1)
    assert not np.allclose(norms, 1.0)
    cosine = ((vectors / norms[:, None]) * reference.embeddings[:4]).sum(axis=1)
    assert cosine.max() < 0.999, "CLS pooling of prefixed texts is not the mean reference"


def _pooled_without_token_types(source: Path, out: Path) -> None:
    """A variant export: no token_type_ids input, and a mean-pooled [batch, dim] output."""
    model = onnx.load(str(source / model_files.MODEL_FILE))
    graph = model.graph
    kept = [i for i in graph.input if i.name != "token_type_ids"]
    del graph.input[:]
    graph.input.extend(kept)
    zeros = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
    graph.node.insert(0, helper.make_node("Shape", ["input_ids"], ["ids_shape"]))
    graph.node.insert(
        1, helper.make_node("ConstantOfShape", ["ids_shape"], ["token_type_ids"], value=zeros)
    )
    graph.node.extend([
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["last_hidden_state", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["counts"], keepdims=0),
        helper.make_node("Div", ["summed", "counts"], ["sentence_embedding"]),
    ])  # fmt: skip
    graph.initializer.extend([
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
    ])  # fmt: skip
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", 384])
    )
    out.mkdir()
    onnx.save(model, str(out / model_files.MODEL_FILE))
    shutil.copy(source / model_files.TOKENIZER_FILE, out / model_files.TOKENIZER_FILE)


def test_a_graph_without_token_types_and_with_pooled_output_works(
    model_dir: Path, tmp_path: Path, reference: Reference
) -> None:
    variant = tmp_path / "pooled"
    _pooled_without_token_types(model_dir, variant)
    # No embedder.json: defaults (mean, normalize) and max_length given here.
    embedder = OnnxEmbedder(variant, max_length=256)
    assert embedder.name == "pooled"
    assert embedder.dim == 384
    vectors = embedder.embed(reference.sentences)
    assert np.abs(vectors - reference.embeddings).max() <= 1e-5


def test_int8_model_is_built_once_and_stays_close(model_dir: Path, reference: Reference) -> None:
    int8 = OnnxEmbedder(model_dir, quantize=True)
    assert (model_dir / model_files.INT8_FILE).exists()
    assert build_model.ensure_int8(model_dir) == model_dir / model_files.INT8_FILE
    cosine = (int8.embed(reference.sentences) * reference.embeddings).sum(axis=1)
    assert cosine.min() > 0.95
    assert cosine.mean() > 0.98


def test_unknown_pooling_is_refused(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="pooling"):
        OnnxEmbedder(model_dir, pooling="max")
