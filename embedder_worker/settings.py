"""Settings of the embedding workers and of the gateway's pool over them.

A frozen value; the gateway's config module builds it from the config file and environment, and
``validate()`` names the field and what was expected when a value is wrong. Reads nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POOLINGS = ("mean", "cls")
# A worker's onnxruntime session: intra-op threads for one inference, and how many inferences
# run at once ("lanes", sharing that session and its weights). Two and two suit a 2-CPU machine
# (measured in bench/RESULTS.md): a lone query gets both CPUs, and at concurrency two batches run
# side by side, each on about one CPU, which scales better than one batch on two threads.
DEFAULT_THREADS = 2
DEFAULT_LANES = 2


@dataclass(frozen=True, slots=True)
class EmbedderSettings:
    """How many workers to run (or which sidecar sockets to use) and how to call them.

    ``sockets`` non-empty means sidecar mode: connect to those sockets, start nothing. ``pooling``,
    ``normalize`` and ``max_length`` left as None come from the model's ``embedder.json``.
    """

    model_dir: Path
    workers: int = 1
    threads: int = DEFAULT_THREADS
    lanes: int = DEFAULT_LANES
    sockets: tuple[Path, ...] = ()
    call_timeout_ms: float = 2000.0
    max_batch: int = 32
    max_wait_ms: float = 2.0
    lru_size: int = 1024
    pooling: str | None = None
    normalize: bool | None = None
    max_length: int | None = None
    query_prefix: str = ""
    quantize: bool = False
    # Worker start-up and restart policy (managed mode).
    start_timeout_s: float = 60.0
    restart_backoff_s: float = 0.1
    restart_backoff_max_s: float = 10.0
    drain_timeout_s: float = 10.0
    run_dir: Path | None = None  # where managed workers' sockets go; None = a fresh temp dir

    @property
    def sidecar(self) -> bool:
        return bool(self.sockets)

    def validate(self) -> EmbedderSettings:
        """Return self, or raise ValueError naming the first bad field."""
        checks = (
            ("workers", self.workers >= 1 or self.sidecar, "an integer >= 1"),
            ("threads", self.threads >= 1, "an integer >= 1"),
            ("lanes", self.lanes >= 1, "an integer >= 1"),
            ("call_timeout_ms", self.call_timeout_ms > 0, "a number > 0"),
            ("max_batch", 1 <= self.max_batch <= 1024, "an integer in 1..1024"),
            ("max_wait_ms", self.max_wait_ms >= 0, "a number >= 0"),
            ("lru_size", self.lru_size >= 0, "an integer >= 0"),
            ("pooling", self.pooling is None or self.pooling in POOLINGS, f"one of {POOLINGS}"),
            ("max_length", self.max_length is None or self.max_length >= 2, "an integer >= 2"),
            ("restart_backoff_s", self.restart_backoff_s > 0, "a number > 0"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(
                    f"embedder.{name}: expected {expected}, got {getattr(self, name)!r}"
                )
        return self
