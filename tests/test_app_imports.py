"""What a gateway process loads: the heavy libraries of the features it does not use stay out
(``gateway/app.py`` and the modules it imports; the figures are in bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = """
import json, sys
from gateway.__main__ import main  # the CLI and everything `gateway serve` imports
from gateway.app import create_app
from gateway.core.config import load
from pathlib import Path
create_app(load(Path(sys.argv[1])))
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def _top_level_modules(config: str, tmp_path: Path) -> set[str]:
    path = tmp_path / "gateway.toml"
    path.write_text(config.format(data=tmp_path / "data", models=ROOT / "models"))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout))


BASE = """
[server]
data_dir = "{data}"
[embedder]
model_dir = "{models}/all-MiniLM-L6-v2"
[cache]
enabled = true
[[providers]]
name = "p"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[[models]]
name = "m"
provider = "p"
tier = "cheap"
"""


def test_a_gateway_without_redis_or_a_tokenizer_loads_neither_nor_onnxruntime(
    tmp_path: Path,
) -> None:
    """The embedding model runs in the worker: its runtime has no business in the gateway."""
    loaded = _top_level_modules(BASE, tmp_path)
    assert {"aiohttp", "numpy", "hnswlib"} <= loaded  # what it does use, so the probe works
    assert not loaded & {"redis", "onnxruntime", "tokenizers", "opentelemetry"}
