"""In-process sentence embeddings: an ONNX encoder session, its tokenizer, pooling.

``OnnxEmbedder(model_dir)`` loads ``model.onnx`` (or ``model.int8.onnx`` with
``quantize=True``), ``tokenizer.json`` and, when present, ``embedder.json`` (name, dim, pooling,
normalize, max_length, query_prefix); keyword arguments override the file. Any BERT-family export
works: the graph may or may not take ``token_type_ids`` (or ``position_ids``), and may output token
states (pooled here: ``mean`` over the attention mask, or ``cls``) or an already pooled
``[batch, dim]`` vector. The session runs the graph ``embedder_worker.optimized`` saves beside
the source (optimized once, weights memory-mapped from their own file).

The worker's server uses the two halves separately (``encode`` on arrival, to group texts by token
length, then ``infer`` on a batch); offline users call ``embed``. Touches only the model directory
(reads it; writes the optimized graph there when missing).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import numpy.typing as npt

from embedder_worker.model_files import CONFIG_FILE, INT8_FILE, MODEL_FILE, TOKENIZER_FILE
from embedder_worker.settings import DEFAULT_THREADS

# The gateway process reads ModelConfig from here; onnxruntime and tokenizers (~20 MiB resident)
# load only in a process that builds a session.
if TYPE_CHECKING:
    import onnxruntime as ort
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

Pooling = Literal["mean", "cls"]
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
POOLINGS: tuple[Pooling, ...] = ("mean", "cls")
_TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")
# What one inference costs beyond its padded tokens, in tokens: measured for MiniLM on CPU,
# where a small batch is bound by streaming the weights (~2.7 ms) and a token costs ~0.2 ms.
_RUN_OVERHEAD_TOKENS = 12
_WARM_UP_TEXTS = (
    "warm up",
    "a somewhat longer sentence that warms up a second sequence length " * 4,
)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized text, unpadded, already truncated."""

    ids: IntArray
    type_ids: IntArray

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """How to turn the encoder's output into one vector per text."""

    name: str
    pooling: Pooling
    normalize: bool
    max_length: int
    query_prefix: str
    output: str | None
    dim: int | None

    @classmethod
    def load(cls, model_dir: Path) -> ModelConfig:
        path = model_dir / CONFIG_FILE
        raw: dict[str, object] = {}
        if path.exists():
            raw = json.loads(path.read_text(encoding="utf-8"))
        pooling = str(raw.get("pooling", "mean"))
        if pooling not in POOLINGS:
            raise ValueError(f"{path}: pooling must be one of {POOLINGS}, got {pooling!r}")
        output = raw.get("output")
        dim = raw.get("dim")
        return cls(
            name=str(raw.get("name", model_dir.name)),
            pooling=pooling,
            normalize=bool(raw.get("normalize", True)),
            max_length=int(str(raw.get("max_length", 512))),
            query_prefix=str(raw.get("query_prefix", "")),
            output=str(output) if output is not None else None,
            dim=int(str(dim)) if dim is not None else None,
        )


def length_batches(
    lengths: Sequence[int], max_batch: int, overhead_tokens: int = _RUN_OVERHEAD_TOKENS
) -> list[list[int]]:
    """Indices split into batches of similar token length, shortest first, so that short texts
    do not pay for a long one's padding.

    A batch costs about ``overhead_tokens + size * longest`` (each run streams every weight once;
    then work grows with the padded tokens); the split of the sorted texts that minimises the
    total is found by dynamic programming over batches of at most ``max_batch``.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    sizes = [lengths[i] for i in order]
    best = [0] + [0] * len(order)  # best[j]: cheapest cost of the first j texts
    start = [0] * (len(order) + 1)  # start[j]: where the last batch of that split begins
    for end in range(1, len(order) + 1):
        best[end], start[end] = min(
            (best[i] + overhead_tokens + (end - i) * sizes[end - 1], i)
            for i in range(max(0, end - max_batch), end)
        )
    batches: list[list[int]] = []
    end = len(order)
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


def pool(hidden: FloatArray, mask: IntArray, pooling: Pooling) -> FloatArray:
    """[B, S, H] token states -> [B, H]: mean over the attention mask, or the first (CLS) token."""
    if pooling == "cls":
        return hidden[:, 0, :]
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    return cast(FloatArray, summed / counts)


def l2_normalize(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return cast(FloatArray, vectors / np.clip(norms, 1e-12, None))


def pad_batch(batch: Sequence[Encoded], pad_id: int) -> tuple[IntArray, IntArray, IntArray]:
    """Right-pad to the longest text of the batch: (input_ids, attention_mask, token_type_ids)."""
    width = max(item.length for item in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    types = np.zeros((len(batch), width), dtype=np.int64)
    for row, item in enumerate(batch):
        ids[row, : item.length] = item.ids
        mask[row, : item.length] = 1
        types[row, : item.length] = item.type_ids
    return ids, mask, types


def _graph_to_load(source: Path) -> tuple[Path, ort.GraphOptimizationLevel]:
    """The saved optimized graph of ``source`` (saved now if missing), loaded as it is; or, when
    the model directory cannot take it, ``source`` optimized in memory at each start."""
    import onnxruntime as ort

    from embedder_worker.optimized import ensure_optimized

    try:
        return ensure_optimized(source), ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # A read-only model directory (an image built before the file), or onnxruntime unable to
    # save this model's graph with its weights apart (its errors derive from Exception only):
    # the model may still run optimized in memory, as before the saved graph existed.
    except Exception as exc:
        logger.warning(
            "no optimized graph beside %s (%s): optimizing in memory, weights on the heap",
            source,
            exc,
        )
        return source, ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def _session(source: Path, threads: int) -> ort.InferenceSession:
    import onnxruntime as ort

    path, level = _graph_to_load(source)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = level
    # Batches change shape every call; the arena would keep the largest one ever seen.
    options.enable_cpu_mem_arena = False
    # Spinning threads wait for work by burning a core; on a small shared machine that costs
    # more than the wake-up it saves: measured with 2 threads, bounded spinning
    # (spin_duration_us=200, or force_spinning_stop) is ~20% faster for a lone query on an idle
    # machine but 2-3x slower whenever another process wants the CPU, and it starves the lanes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _int8_model(model_dir: Path) -> Path:
    path = model_dir / INT8_FILE
    if not path.exists():
        # Imported here: quantizing needs onnx (the build-model extra), serving does not.
        from embedder_worker.build_model import ensure_int8

        ensure_int8(model_dir)
    return path


def _pick_output(session: ort.InferenceSession, configured: str | None) -> str:
    names = [str(out.name) for out in session.get_outputs()]
    if configured is not None:
        if configured not in names:
            raise ValueError(f"model has no output {configured!r} (outputs: {names})")
        return configured
    for name in (*_TOKEN_OUTPUTS, "sentence_embedding"):
        if name in names:
            return name
    return names[0]


class OnnxEmbedder:
    """A sentence-embedding model in this process, on one ORT session (one copy of the weights).

    ``infer`` and ``embed`` are thread-safe: calls from several threads run at once, sharing the
    session's ``threads`` intra-op threads (the worker's lanes rely on it).
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        threads: int = DEFAULT_THREADS,
        max_length: int | None = None,
        pooling: str | None = None,
        normalize: bool | None = None,
        query_prefix: str | None = None,
        quantize: bool = False,
    ) -> None:
        model_dir = Path(model_dir)
        base = ModelConfig.load(model_dir)
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.name = base.name
        self.pooling: Pooling = pooling if pooling is not None else base.pooling
        self.normalize = base.normalize if normalize is None else normalize
        self.max_length = max_length or base.max_length
        self.query_prefix = base.query_prefix if query_prefix is None else query_prefix
        self.quantized = quantize
        self.threads = threads
        path = _int8_model(model_dir) if quantize else model_dir / MODEL_FILE
        self._session = _session(path, threads)
        self._inputs = {inp.name for inp in self._session.get_inputs()}
        self._output = _pick_output(self._session, base.output)
        self._tokenizer = self._load_tokenizer(model_dir / TOKENIZER_FILE)
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self.dim = base.dim or int(self.infer(self.encode(["dim"])).shape[1])
        logger.info(
            "loaded %s from %s (dim %d, %s pooling)", self.name, path, self.dim, self.pooling
        )

    def _load_tokenizer(self, path: Path) -> Tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
        # The shipped file may fix 128 tokens of padding; pad per batch in pad_batch instead.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.max_length)
        return tokenizer

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize (query prefix added, truncated to ``max_length``), without padding."""
        prefixed = [self.query_prefix + text for text in texts] if self.query_prefix else texts
        encodings = self._tokenizer.encode_batch(list(prefixed))
        return [
            Encoded(np.asarray(enc.ids, dtype=np.int64), np.asarray(enc.type_ids, dtype=np.int64))
            for enc in encodings
        ]

    def infer(self, batch: Sequence[Encoded]) -> FloatArray:
        """One inference over ``batch``: [len(batch), dim] float32 vectors."""
        ids, mask, types = pad_batch(batch, self._pad_id)
        feed: dict[str, IntArray] = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            feed["attention_mask"] = mask
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = types
        if "position_ids" in self._inputs:
            feed["position_ids"] = np.broadcast_to(np.arange(ids.shape[1]), ids.shape).copy()
        (out,) = self._session.run([self._output], feed)
        vectors = np.asarray(out, dtype=np.float32)
        if vectors.ndim == 3:
            vectors = pool(vectors, mask, self.pooling)
        if self.normalize:
            vectors = l2_normalize(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> FloatArray:
        """Vectors for ``texts`` in order; batches are formed by token length to limit padding."""
        encoded = self.encode(texts)
        result = np.empty((len(encoded), self.dim), dtype=np.float32)
        for group in length_batches([enc.length for enc in encoded], batch_size):
            result[group] = self.infer([encoded[i] for i in group])
        return result

    def warm_up(self) -> None:
        """Run the first inferences now, so no caller pays for ORT's lazy initialisation."""
        self.infer(self.encode(list(_WARM_UP_TEXTS)))
        self.infer(self.encode(_WARM_UP_TEXTS[:1]))
