"""The graph optimized once and saved beside the model, its weights memory-mapped
(``embedder_worker/optimized.py``), and the in-memory fallback when it cannot be saved."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import pytest

from embedder_worker import model_files
from embedder_worker.model import OnnxEmbedder
from embedder_worker.optimized import (
    ensure_optimized,
    lock_path,
    optimized_path,
    weights_path,
)

pytest_plugins = ["tests.embedder_fixtures"]

if TYPE_CHECKING:
    from tests.embedder_fixtures import Reference


@pytest.fixture
def fresh_model(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the model directory without any optimized graph."""
    copy = tmp_path / "model"
    copy.mkdir()
    for name in (model_files.MODEL_FILE, model_files.TOKENIZER_FILE, model_files.CONFIG_FILE):
        shutil.copy(model_dir / name, copy / name)
    return copy


def _mapped_files() -> set[str]:
    return {line.split(maxsplit=5)[5].strip() for line in
            Path("/proc/self/maps").read_text().splitlines() if len(line.split()) == 6}


def test_the_optimized_graph_is_saved_once_with_its_weights_in_a_file_apart(
    fresh_model: Path,
) -> None:
    source = fresh_model / model_files.MODEL_FILE
    graph = ensure_optimized(source)
    assert graph == optimized_path(source) and graph.parent == fresh_model
    weights = weights_path(graph)
    # The weights left the graph file: it is a few KiB, the weights file about the source's size.
    assert graph.stat().st_size < 1_000_000 < source.stat().st_size * 0.9 < weights.stat().st_size
    written = (graph.stat().st_mtime_ns, weights.stat().st_mtime_ns)
    assert ensure_optimized(source) == graph
    assert (graph.stat().st_mtime_ns, weights.stat().st_mtime_ns) == written
    assert not list(fresh_model.glob(".optimize-*")), "the staging directory was left behind"


def test_an_embedder_maps_the_saved_weights_and_gives_the_reference_vectors(
    fresh_model: Path, reference: Reference
) -> None:
    embedder = OnnxEmbedder(fresh_model)
    weights = weights_path(optimized_path(fresh_model / model_files.MODEL_FILE))
    assert str(weights) in _mapped_files(), "the weights were read into the heap, not mapped"
    vectors = embedder.embed(reference.sentences)
    assert np.abs(vectors - reference.embeddings).max() <= 1e-5


def test_a_directory_that_cannot_take_the_graph_still_gives_the_reference_vectors(
    fresh_model: Path, reference: Reference, caplog: pytest.LogCaptureFixture
) -> None:
    # A non-empty directory where the weights file would go: the rename fails, as it would on
    # a read-only model directory (which root, running the tests, could still write to).
    blocker = weights_path(optimized_path(fresh_model / model_files.MODEL_FILE))
    blocker.mkdir()
    (blocker / "keep").write_text("in the way")
    with caplog.at_level(logging.WARNING, logger="embedder_worker.model"):
        embedder = OnnxEmbedder(fresh_model)
    assert "no optimized graph beside" in caplog.text and "optimizing in memory" in caplog.text
    vectors = embedder.embed(reference.sentences)
    assert np.abs(vectors - reference.embeddings).max() <= 1e-5
    assert not optimized_path(fresh_model / model_files.MODEL_FILE).exists()


def test_a_source_written_after_the_saved_graph_gets_a_new_one(fresh_model: Path) -> None:
    source = fresh_model / model_files.MODEL_FILE
    graph = ensure_optimized(source)
    # As if the model were rebuilt or replaced ten seconds after the graph was saved.
    earlier = source.stat().st_mtime_ns - 10_000_000_000
    os.utime(graph, ns=(earlier, earlier))
    assert ensure_optimized(source) == graph
    assert graph.stat().st_mtime_ns >= source.stat().st_mtime_ns, "the stale graph was kept"


def test_writing_a_graph_removes_those_other_onnxruntime_versions_made(
    fresh_model: Path,
) -> None:
    source = fresh_model / model_files.MODEL_FILE
    old = [fresh_model / "model.ort-1.0.0.onnx", fresh_model / "model.ort-1.0.0.onnx.data"]
    other_source = fresh_model / "model.int8.ort-1.0.0.onnx"  # another source's: kept
    for path in (*old, other_source):
        path.write_bytes(b"from an older onnxruntime")
    graph = ensure_optimized(source)
    assert graph.exists() and weights_path(graph).exists()
    assert not any(path.exists() for path in old)
    assert other_source.exists()


def test_a_worker_that_finds_another_writing_waits_and_then_uses_its_graph(
    fresh_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = fresh_model / model_files.MODEL_FILE
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(fresh_model, elsewhere)
    made = ensure_optimized(elsewhere / model_files.MODEL_FILE)  # what the other worker writes
    lock = lock_path(source)
    reached, flock = threading.Event(), fcntl.flock

    def flock_in_the_second(file: IO[bytes], operation: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            reached.set()  # it found no graph and asks for the lock, which blocks while held
        flock(file, operation)

    monkeypatch.setattr(fcntl, "flock", flock_in_the_second)
    with open(lock, "ab") as held, ThreadPoolExecutor(1) as pool:
        fcntl.flock(held, fcntl.LOCK_EX)  # the other worker is writing
        second = pool.submit(ensure_optimized, source)
        assert reached.wait(30), "the second worker never asked for the lock"
        assert not second.done(), "the second worker wrote without waiting for the first"
        target = optimized_path(source)
        shutil.copy(weights_path(made), weights_path(target))
        shutil.copy(made, target)
        written = (target.stat().st_ino, weights_path(target).stat().st_ino)
        fcntl.flock(held, fcntl.LOCK_UN)
        assert second.result(timeout=60) == target
    assert (target.stat().st_ino, weights_path(target).stat().st_ino) == written


def test_a_worker_that_died_holding_the_lock_does_not_block_the_next(fresh_model: Path) -> None:
    source = fresh_model / model_files.MODEL_FILE
    with subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys\n"
         "lock = open(sys.argv[1], 'ab')\n"
         "fcntl.flock(lock, fcntl.LOCK_EX)\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n",  # holds it until killed
         str(lock_path(source))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        finally:
            holder.kill()  # dies holding it, as a worker killed while optimizing would
    with open(lock_path(source), "ab") as lock:  # free now: BlockingIOError if still held
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(lock, fcntl.LOCK_UN)
    graph = ensure_optimized(source)
    assert graph == optimized_path(source) and weights_path(graph).exists()
