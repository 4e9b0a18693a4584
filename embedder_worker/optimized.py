"""A model graph optimized once, for this onnxruntime, with its weights in a file of their own.

``ensure_optimized(source)`` writes, beside ``model.onnx`` (or any source graph), the graph that
onnxruntime's extended optimizations make of it (fused attention, layer norms, GELU) as
``model.ort-<version>.onnx`` and its weights as ``model.ort-<version>.onnx.data``. A worker then
loads that graph without optimizing it again, which saves the start-up time and the transient
copies of the weights that optimizing makes, and onnxruntime memory-maps the weights file instead
of reading the weights into its heap: pages are loaded only when touched (most rows of the word
embedding table never are), they are page cache that every worker on the machine shares, and the
kernel may drop and reload them under pressure.

Only the extended level is saved: it is what every CPU can run; the layout level is tied to the
machine. The version is in the name because the fused operators belong to one onnxruntime; another
version ignores the file and makes its own, and a source written after the file replaces it;
writing a new one removes the files other onnxruntime versions made of the same source. Files
appear under their final names only once complete (written in a temporary directory beside them,
then renamed, weights first), so workers starting at once never read half a file; and one writes
at a time (an exclusive ``flock`` on a hidden lock file beside the source), so two workers
optimizing at the same moment cannot pair one's graph with the other's weights: the second waits
and then uses the first's files. Touches only the model directory and onnxruntime.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnxruntime as ort

logger = logging.getLogger(__name__)

_MIN_EXTERNAL_BYTES = 1024  # smaller initializers (scalars, shapes) stay in the graph file


def optimized_path(source: Path) -> Path:
    """Where the optimized graph of ``source`` lives for this onnxruntime."""
    return source.with_name(f"{source.stem}.ort-{ort.__version__}.onnx")


def weights_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".data")


def _current(target: Path, source: Path) -> bool:
    """Both files there, and made after the source was last written (a model rebuilt or replaced
    under the same name gets a new optimized graph, not the old one's vectors)."""
    try:
        return (weights_path(target).exists()
                and target.stat().st_mtime_ns >= source.stat().st_mtime_ns)
    except FileNotFoundError:
        return False


def lock_path(source: Path) -> Path:
    """The file whose lock one writer of ``source``'s optimized graph holds at a time."""
    return source.with_name(f".{source.name}.optimize.lock")


def ensure_optimized(source: Path) -> Path:
    """The optimized graph of ``source``, written first if missing; OSError if it cannot be."""
    target = optimized_path(source)
    if _current(target, source):
        return target
    with _locked(lock_path(source)):
        if not _current(target, source):  # else another worker wrote it while this one waited
            _write(source, target)
            _remove_other_versions(source, target)
    return target


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even on a crash
        yield


def _write(source: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=source.parent, prefix=".optimize-") as tmp:
        staged = Path(tmp) / target.name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(staged)
        # The weights file is named relative to the graph; the same name holds after the rename.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", weights_path(target).name
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes",
            str(_MIN_EXTERNAL_BYTES),
        )
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        for path in (weights_path(staged), staged):
            os.chmod(path, 0o644)
        os.replace(weights_path(staged), weights_path(target))
        os.replace(staged, target)
    logger.info("saved the optimized graph of %s as %s", source.name, target)


def _remove_other_versions(source: Path, target: Path) -> None:
    """The graphs and weights other onnxruntime versions made of ``source``: a worker of this
    version never reads them, and each is as large as the model."""
    keep = {target.name, weights_path(target).name}
    for path in source.parent.glob(f"{source.stem}.ort-*.onnx*"):
        if path.name not in keep and path.name.endswith((".onnx", ".onnx.data")):
            path.unlink(missing_ok=True)
            logger.info("removed %s, made by another onnxruntime", path.name)
