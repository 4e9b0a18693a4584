"""Benchmark of the embedding worker: start-up, socket overhead, micro-batching, memory, int8.

    .venv/bin/python bench/bench_embedder.py [--model DIR] [--queries N] [--write bench/RESULTS.md]

Starts real workers (``python -m embedder_worker``) on Unix sockets in a temporary directory and
measures, in one run: start to READY; the first request after READY against the steady-state
p50; one query in-process against the same query over the socket, interleaved; throughput one at
a time against 32 concurrent callers (micro-batching); RSS per worker for float32 and int8; and
int8's cosine deviation from float32. The machine is shared and noisy: compare ratios within a
run. ``--write`` replaces the "Embedding worker" section of the results file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedder_worker import build_model  # noqa: E402
from embedder_worker.client import EmbedderPool, WorkerConnection  # noqa: E402
from embedder_worker.model import OnnxEmbedder  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "minilm_ref.npz"
SECTION = "## Embedding worker"
CONCURRENCY = 32
ANALYSIS = """\
Analysis (from instrumenting the worker on this machine; not re-measured by the script):

- **Socket overhead.** Timestamps across client and worker (CLOCK_MONOTONIC, 200 single
  queries) put the ~1 ms at: client write to request queued in the worker 0.27-0.34 ms,
  queue to inference thread 0.06-0.10 ms, inference thread back to the loop 0.2-0.5 ms, reply
  to client 0.19-0.29 ms. The code on that path is small (tokenizing 25 us, framing < 5 us
  each way); the rest is waking sleeping threads and processes on this shared 2-vCPU VM (a
  bare PING round trip is ~0.2 ms). Getting under 0.3 ms here would take running inference on
  the socket thread itself (no hop, but the loop would stall during inference, which the
  design rules out) or letting the inference thread write replies (saves the return hop only).
- **Batching gain.** In-process, one text of up to 16 tokens costs ~5.6 ms whatever its length
  (a run streams ~42 MB of float32 weights), while big batches cost ~0.23 ms per padded token
  (~95 GFLOP/s, one core's FMA peak). So batching can gain at most ~5.6 / (0.23 x tokens):
  about 2.3x at 10 tokens, 1.5x at 16. Past that, throughput comes from more workers (one per
  core). Batches are cut by dynamic programming over the texts sorted by length (cost of a
  batch = 12 + size x longest, in tokens), so short prompts do not pay for a long one's padding.
- **int8** (`quantize = true`, dynamic per-channel): about 2x faster and ~70 MiB smaller per
  worker, but cosine to float32 is 0.968 at worst. That is the size of the gap the semantic
  cache must tell apart (a paraphrase scores 0.860, a negation 0.928), so float32 stays the
  default.
"""


@dataclass
class Worker:
    process: asyncio.subprocess.Process
    socket: Path
    ready_s: float

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
        await self.process.wait()


@dataclass
class Results:
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # goal, measured, verdict

    def add(self, goal: str, measured: str, ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        self.rows.append((goal, measured, verdict))
        print(f"{goal:50} | {measured} | {verdict}", flush=True)

    def markdown(self, command: str, machine: str) -> str:
        lines = [
            SECTION,
            "",
            f"Command: `{command}`",
            "",
            f"Machine: {machine}. One run; the machine is shared with teammates, so absolute",
            "figures are noisy: read the ratios, which are taken within the same run.",
            "",
            "| goal | measured | |",
            "|---|---|---|",
            *(f"| {goal} | {measured} | {verdict} |" for goal, measured, verdict in self.rows),
            "",
            ANALYSIS,
        ]
        return "\n".join(lines)


async def start_worker(model: Path, socket: Path, *extra: str) -> Worker:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "embedder_worker", "--socket", str(socket), "--model", str(model),
        "--log-level", "WARNING", *extra, stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line.startswith(b"READY"):
        raise RuntimeError(f"worker failed to start: {line!r}")
    return Worker(process, socket, time.perf_counter() - started)


@dataclass(frozen=True)
class TextSet:
    name: str
    texts: list[str]

    def take(self, count: int) -> list[str]:
        """``count`` texts, cycling; the pools run without LRU, so repeats still hit the model."""
        return [self.texts[i % len(self.texts)] for i in range(count)]


def text_sets(model: Path) -> tuple[TextSet, TextSet]:
    """Short prompts (8-14 tokens: the reference's questions and sentences), and a mix of
    everything up to 46 tokens (code, non-ASCII text, JSON...)."""
    sentences = [str(s) for s in np.load(REFERENCE)["sentences"]]
    lengths = [enc.length for enc in OnnxEmbedder(model).encode(sentences)]
    pairs = list(zip(sentences, lengths, strict=True))
    short = [text for text, n in pairs if 8 <= n <= 14]
    mixed = [text for text, n in pairs if 8 <= n <= 46]
    return TextSet("short prompts, 8-14 tokens", short), TextSet("mixed, 8-46 tokens", mixed)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def bench_start(model: Path, run_dir: Path, results: Results) -> None:
    times = []
    for i in range(3):
        worker = await start_worker(model, run_dir / f"start-{i}.sock")
        times.append(worker.ready_s)
        await worker.stop()
    median = statistics.median(times)
    shown = ", ".join(f"{t:.2f}" for t in times)
    results.add(
        "start to READY <= 1.5 s", f"median {median:.2f} s (runs: {shown} s)", median <= 1.5
    )


async def bench_latency(model: Path, worker: Worker, texts: list[str], results: Results) -> None:
    """First request after READY, then single queries in-process and over the socket, paired."""
    local = OnnxEmbedder(model)
    local.warm_up()
    conn = await WorkerConnection.open(worker.socket)
    try:
        first = await timed(lambda: conn.embed([texts[0]]))
        inproc, socket, pings = [], [], []
        for text in texts[1:]:
            pings.append(await timed(conn.ping))
            started = time.perf_counter()
            local.embed([text])
            inproc.append(time.perf_counter() - started)
            started = time.perf_counter()
            await conn.embed([text])
            socket.append(time.perf_counter() - started)
    finally:
        await conn.close()
    steady = statistics.median(socket)
    ratio = first / steady
    results.add(
        "first request after READY <= 1.5x steady p50",
        f"{ms(first)} vs p50 {ms(steady)} ({ratio:.2f}x)",
        ratio <= 1.5,
    )
    overhead = statistics.median([s - i for s, i in zip(socket, inproc, strict=True)])
    results.add(
        "socket+protocol overhead <= 0.3 ms p50, 1 query",
        f"{overhead * 1000:.3f} ms (p50 in-process {ms(statistics.median(inproc))}, "
        f"over the socket {ms(steady)}; median of {len(socket)} paired differences)",
        overhead <= 0.0003,
    )
    results.add(
        "of which: PING round trip p50 (socket + framing alone)",
        f"{statistics.median(pings) * 1000:.3f} ms; the rest is the hop to the inference "
        "thread and back",
    )


async def throughput(pool: EmbedderPool, texts: list[str], concurrency: int) -> float:
    """Queries per second with ``concurrency`` callers each sending one text at a time."""
    queue = list(reversed(texts))

    async def caller() -> None:
        while queue:
            await pool.embed_one(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(texts) / (time.perf_counter() - started)


async def bench_throughput(
    workers: list[Worker], texts: TextSet, queries: int, results: Results
) -> None:
    pool = EmbedderPool(call_timeout_ms=60_000, lru_size=0)
    try:
        await pool.attach(workers[0].socket)
        one = await throughput(pool, texts.take(queries // 2), 1)
        many = await throughput(pool, texts.take(queries), CONCURRENCY)
        results.add(
            f"1 worker, {texts.name}: concurrency {CONCURRENCY} >= 2x one at a time",
            f"{many:.0f} vs {one:.0f} queries/s ({many / one:.2f}x)",
            many / one >= 2,
        )
        for worker in workers[1:]:
            await pool.attach(worker.socket)
        both = await throughput(pool, texts.take(queries), CONCURRENCY)
        results.add(
            f"{len(workers)} workers x 1 thread, {texts.name}, concurrency {CONCURRENCY}",
            f"{both:.0f} queries/s ({both / one:.2f}x one at a time on 1 worker)",
        )
    finally:
        await pool.close()


async def bench_int8(
    model: Path, run_dir: Path, f32: Worker, texts: TextSet, results: Results
) -> None:
    build_model.ensure_int8(model)
    int8 = await start_worker(model, run_dir / "int8.sock", "--quantize")
    try:
        pool = EmbedderPool(lru_size=0)
        await pool.attach(int8.socket)
        await pool.embed(texts.take(64))  # load, as the float32 worker had
        await pool.close()
        results.add("RSS per worker, float32 (after load)", f"{f32.rss_mib():.0f} MiB")
        results.add("RSS per worker, int8 (after load)", f"{int8.rss_mib():.0f} MiB")
    finally:
        await int8.stop()
    sentences = [str(s) for s in np.load(REFERENCE)["sentences"]]
    full = OnnxEmbedder(model).embed(sentences)
    quant_model = OnnxEmbedder(model, quantize=True)
    quant = quant_model.embed(sentences)
    cosine = (full * quant).sum(axis=1)
    results.add(
        "int8 cosine vs float32 (60 reference sentences)",
        f"min {cosine.min():.4f}, mean {cosine.mean():.4f}; 1 - mean = {1 - cosine.mean():.4f}",
    )
    f32_model = OnnxEmbedder(model)
    f32_t = statistics.median([_time_sync(f32_model, t) for t in texts.take(100)])
    int8_t = statistics.median([_time_sync(quant_model, t) for t in texts.take(100)])
    results.add("int8 vs float32, 1 query in-process p50", f"{ms(int8_t)} vs {ms(f32_t)}")


def _time_sync(model: OnnxEmbedder, text: str) -> float:
    started = time.perf_counter()
    model.embed([text])
    return time.perf_counter() - started


async def run(model: Path, queries: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as tmp:
        run_dir = Path(tmp)
        await bench_start(model, run_dir, results)
        short, mixed = text_sets(model)
        workers = [await start_worker(model, run_dir / f"w{i}.sock") for i in range(2)]
        try:
            await bench_latency(model, workers[0], short.take(queries + 1), results)
            for texts in (short, mixed):
                await bench_throughput(workers, texts, queries * 2, results)
            await bench_int8(model, run_dir, workers[0], short, results)
        finally:
            for worker in workers:
                await worker.stop()
    return results


def write_section(path: Path, section: str) -> None:
    """Replace (or append) this benchmark's section, leaving the rest of the file alone."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--write", type=Path, default=None, help="results file to update")
    args = parser.parse_args()
    build_model.build(args.model)
    results = asyncio.run(run(args.model, args.queries))
    if args.write is not None:
        machine = f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
        command = ".venv/bin/python bench/bench_embedder.py " + " ".join(sys.argv[1:])
        write_section(args.write, results.markdown(command.strip(), machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
