"""Tests for embedder_worker/__main__.py: a worker that cannot load its model says so in one line.

The supervisor restarts a worker that exits (with backoff); a traceback at every restart buried
the one thing the operator had to do. Real worker processes, no model mocked.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run_worker(model_dir: Path, tmp_path: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "embedder_worker", "--socket", str(tmp_path / "w.sock"),
        "--model", str(model_dir), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_worker_without_a_model_exits_with_one_line_saying_how_to_build_it(
    tmp_path: Path
) -> None:
    status, err = await run_worker(tmp_path / "missing", tmp_path)
    assert status == 2
    assert "no model.onnx in" in err and "embedder_worker.build_model" in err
    assert "Traceback" not in err


async def test_a_worker_whose_model_is_damaged_exits_with_one_line(tmp_path: Path) -> None:
    model_dir = tmp_path / "damaged"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"not an onnx graph")
    (model_dir / "tokenizer.json").write_text("{}")
    status, err = await run_worker(model_dir, tmp_path)
    assert status == 2
    assert "cannot load the model in" in err
    assert "Traceback" not in err
