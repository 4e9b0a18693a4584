"""Benchmark of the embedding worker: start-up, socket overhead, micro-batching, memory, int8.

    .venv/bin/python bench/bench_embedder.py [--model DIR] [--queries N] [--rounds R]
        [--loop uvloop|asyncio] [--write bench/RESULTS.md]

Starts real workers (``python -m embedder_worker``) on Unix sockets in a temporary directory and
measures, in one run: start to READY; the first request after READY against the steady-state
p50; one query in-process against the same query over the socket, paired and interleaved, for a
worker that runs a lone query on its loop thread (the default) and one that sends every batch to
its inference thread (``--inline-max-tokens 0``), also against the model time the worker itself
counted, with a bare PING after the same idle gap as the floor (R rounds of fresh workers, median
over rounds); throughput one at a time against 32 concurrent callers (micro-batching) for both
modes, and the model's own batching gain in-process; RSS per worker for float32 and int8; and
int8's cosine deviation from float32. The client side runs on uvloop by default, as the gateway
does. The machine is shared and noisy: compare ratios within a run. ``--write`` replaces the
"Embedding worker" section of the results file.
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
from embedder_worker.model import OnnxEmbedder, length_batches  # noqa: E402

REFERENCE = ROOT / "tests" / "data" / "minilm_ref.npz"
SECTION = "## Embedding worker"
CONCURRENCY = 32
ANALYSIS = """\
Analysis (from instrumenting client and worker on this machine; not re-measured by the script):

- **Where the ~1 ms went before.** Timestamps across both processes (CLOCK_MONOTONIC, 200 single
  queries): client write to frame parsed in the worker ~0.3 ms, hop to the inference thread
  ~0.2 ms, hop back to the loop (call_soon_threadsafe) ~0.25 ms, reply to the caller ~0.25 ms (a
  reader task, then the caller: two turns of the loop). Framing is < 5 us hot, but every step
  runs on a CPU that has just woken: after a 5 ms idle gap a 2 us frame parse takes ~36 us,
  tokenizing (17 us) ~130 us, and an inference 0.3-0.9 ms longer than back to back.
- **What changed.** A lone text of <= 64 tokens (`--inline-max-tokens`, 0 = off) runs on the
  worker's event loop thread when nothing else is running or queued: no thread hop either way.
  Frames arriving meanwhile wait in the socket buffer and form the next batch; a PING waits at
  most that one inference (~5 ms; ~17 ms at 64 tokens). Batches of 2+ texts still run in the
  inference thread, so the loop keeps reading and tokenizing while they run. Both ends are
  `asyncio.Protocol`s over an incremental `FrameReader` (no reader task: a reply reaches its
  caller one loop turn sooner); the gather turn is skipped when the only connection's bytes were
  all parsed; the worker runs on uvloop, as the gateway does. Against the previous code (its
  client and worker), side by side in one process, 300 paired queries, 6 runs alternating which
  goes first: 0.15-0.81 ms vs 0.55-1.36 ms, 0.31-0.54 ms lower in every run.
- **Why the goal's row is noisy, and the floor.** The paired difference compares two processes'
  model time, and on this shared 2-vCPU VM that alone differs by up to +-0.3 ms between processes
  (two identical workers in one run: 0.01 vs -0.04 ms, 0.56 vs 0.25 ms), hence fresh workers per
  round and the median. It also flatters thread mode: its worker's own model time comes out
  0.15-0.3 ms shorter than the inline worker's against the same in-process reference, likely
  because the inference thread wakes on the CPU the benchmark's in-process call just warmed, while
  inline inference starts at once on the CPU that has just woken. The "round trip - the worker's
  own model time" rows net that out: inline saves ~0.3 ms (the two hops) in every round. Their
  floor: a raw blocking-socket echo (no asyncio, no framing), the server busy 5 ms after the same
  idle gap, costs 0.18-0.28 ms; the PING row is the same through both event loops without the
  5 ms. So <= 0.3 ms sits at this machine's floor for two process wake-ups; the rest (~0.1-0.2 ms)
  is Python on both ends running cold after the wake-up.
- **Batching gain.** The "model alone" rows bound it: one text costs ~4.6-5.6 ms whatever its
  length (a run streams the float32 weights), big batches ~0.23 ms per padded token, so 32-way
  batching gains only ~1.5-2x in-process at 8-14 tokens and ~1.4-1.6x on mixed lengths. The
  worker at concurrency 32 runs at that bound (~2.8 ms per short text); its one-at-a-time figure
  includes the socket, so the measured ratio swings around 2x from run to run. Inline mode does
  not change throughput at concurrency 32 (texts per batch are the same) but speeds up one at a
  time, which lowers the ratio a little. onnxruntime options, in-process (one-off):
  `intra_op_num_threads=2` with `session.intra_op.allow_spinning=0` gives 4.2 ms for one text and
  1.6 ms per text in batches of 32 (2.65x); with spinning (ORT's default) 3.6 ms / 2.1 ms (1.7x),
  and spinning burns a core between queries; arena on, or ENABLE_EXTENDED instead of ENABLE_ALL,
  change < 5%. Turning spinning off is a line in `model._session` (not part of this change); with
  it, `--threads 2` would meet 2x.
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


class _Timed:
    """Round trips to one worker, each next to an in-process embed of the same text, and the
    model time the worker itself counted for it (``model_seconds`` in its INFO)."""

    def __init__(self, conn: WorkerConnection, call: Callable[[str], Awaitable[object]]) -> None:
        self.conn = conn
        self.call = call
        self.round_trips: list[float] = []
        self.inproc: list[float] = []
        self.model: list[float] = []
        self._counted = 0.0

    async def start(self) -> None:
        self._counted = await self._model_seconds()

    async def _model_seconds(self) -> float:
        stats = await self.conn.stats()
        return float(str(stats.get("model_seconds", 0.0)))

    async def measure(self, local: OnnxEmbedder, text: str, model_time: bool) -> None:
        started = time.perf_counter()
        local.embed([text])
        self.inproc.append(time.perf_counter() - started)
        self.round_trips.append(await timed(lambda: self.call(text)))
        if model_time:  # after the timed call, so not in it
            counted, before = await self._model_seconds(), self._counted
            self.model.append(counted - before)
            self._counted = counted

    def overhead(self) -> float:
        """p50 of round trip - in-process embed: the goal's definition."""
        return statistics.median(s - i for s, i in zip(self.round_trips, self.inproc, strict=True))

    def over_own_model(self) -> float:
        """p50 of round trip - the worker's own model time for it: the same CPU on both sides."""
        return statistics.median(s - m for s, m in zip(self.round_trips, self.model, strict=True))


@dataclass
class _Round:
    """One round of the latency benchmark: a fresh worker in each mode."""

    first: float
    inline: _Timed
    threaded: _Timed
    pings: _Timed


async def _latency_round(
    local: OnnxEmbedder, model: Path, run_dir: Path, index: int, texts: list[str]
) -> _Round:
    inline = await start_worker(model, run_dir / f"lat-{index}.sock")
    threaded = await start_worker(
        model, run_dir / f"lat-thread-{index}.sock", "--inline-max-tokens", "0"
    )
    conn = await WorkerConnection.open(inline.socket)
    thread_conn = await WorkerConnection.open(threaded.socket)
    try:
        first = await timed(lambda: conn.embed([texts[0]]))
        await thread_conn.embed([texts[0]])
        measured = _Round(
            first,
            _Timed(conn, lambda text: conn.embed([text])),
            _Timed(thread_conn, lambda text: thread_conn.embed([text])),
            _Timed(conn, lambda _: conn.ping()),
        )
        await measured.inline.start()
        await measured.threaded.start()
        for text in texts[1:]:
            await measured.inline.measure(local, text, model_time=True)
            await measured.threaded.measure(local, text, model_time=True)
            await measured.pings.measure(local, text, model_time=False)
    finally:
        await conn.close()
        await thread_conn.close()
        await inline.stop()
        await threaded.stop()
    return measured


def _spread(values: list[float]) -> str:
    """The median of per-round figures in ms, and every round's."""
    each = ", ".join(f"{v * 1000:.2f}" for v in values)
    return f"{statistics.median(values) * 1000:.3f} ms (rounds: {each})"


async def bench_latency(
    model: Path, run_dir: Path, texts: list[str], rounds: int, results: Results
) -> None:
    """The first request after READY, then single queries in-process and over the socket, paired:
    each socket call comes right after an in-process one, so both workers have been idle as long,
    and so has a bare PING, the floor (two process wake-ups, the loops, no model). Each round
    starts fresh workers: how fast one process runs the model against another is a matter of
    where the VM places them, so the median over rounds is reported."""
    local = OnnxEmbedder(model)
    local.warm_up()
    measured = [await _latency_round(local, model, run_dir, i, texts) for i in range(rounds)]
    steady = statistics.median(measured[0].inline.round_trips)
    ratio = measured[0].first / steady
    results.add(
        "first request after READY <= 1.5x steady p50",
        f"{ms(measured[0].first)} vs p50 {ms(steady)} ({ratio:.2f}x)",
        ratio <= 1.5,
    )
    overheads = [r.inline.overhead() for r in measured]
    inproc = statistics.median(t for r in measured for t in r.inline.inproc)
    socket = statistics.median(t for r in measured for t in r.inline.round_trips)
    results.add(
        "socket+protocol overhead <= 0.3 ms p50, 1 query",
        f"{_spread(overheads)}; p50 of {len(texts) - 1} paired differences per round "
        f"(in-process {ms(inproc)}, over the socket {ms(socket)})",
        statistics.median(overheads) <= 0.0003,
    )
    results.add(
        "same, every batch in the inference thread (`--inline-max-tokens 0`)",
        _spread([r.threaded.overhead() for r in measured]),
    )
    results.add(
        "round trip - the worker's own model time (tokenize + infer, timed in the worker)",
        _spread([r.inline.over_own_model() for r in measured]),
    )
    results.add(
        "same, every batch in the inference thread",
        _spread([r.threaded.over_own_model() for r in measured]),
    )
    results.add(
        "floor: PING round trip p50 after the same idle gap (two process wake-ups, no model)",
        _spread([statistics.median(r.pings.round_trips) for r in measured]),
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
    workers: list[Worker], threaded: Worker, texts: TextSet, queries: int, results: Results
) -> None:
    """One worker one at a time and 32 at a time, for both modes interleaved; then two workers."""
    pool = EmbedderPool(call_timeout_ms=60_000, lru_size=0)
    thread_pool = EmbedderPool(call_timeout_ms=60_000, lru_size=0)
    try:
        await pool.attach(workers[0].socket)
        await thread_pool.attach(threaded.socket)
        one = await throughput(pool, texts.take(queries // 2), 1)
        thread_one = await throughput(thread_pool, texts.take(queries // 2), 1)
        many = await throughput(pool, texts.take(queries), CONCURRENCY)
        thread_many = await throughput(thread_pool, texts.take(queries), CONCURRENCY)
        results.add(
            f"1 worker, {texts.name}: concurrency {CONCURRENCY} >= 2x one at a time",
            f"{many:.0f} vs {one:.0f} queries/s ({many / one:.2f}x)",
            many / one >= 2,
        )
        results.add(
            "same, every batch in the inference thread",
            f"{thread_many:.0f} vs {thread_one:.0f} queries/s ({thread_many / thread_one:.2f}x)",
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
        await thread_pool.close()


def bench_model_batching(model: Path, texts: TextSet, results: Results) -> None:
    """The most batching can gain: in-process, one text per run against runs of 32 texts cut as
    the worker cuts them (by token length)."""
    local = OnnxEmbedder(model)
    local.warm_up()
    encoded = local.encode(texts.take(CONCURRENCY * 4))
    started = time.perf_counter()
    for item in encoded:
        local.infer([item])
    single = (time.perf_counter() - started) / len(encoded)
    started = time.perf_counter()
    for first in range(0, len(encoded), CONCURRENCY):
        batch = encoded[first : first + CONCURRENCY]
        for group in length_batches([item.length for item in batch], CONCURRENCY):
            local.infer([batch[i] for i in group])
    batched = (time.perf_counter() - started) / len(encoded)
    results.add(
        f"model alone, {texts.name}: 1 text per run vs runs of {CONCURRENCY}",
        f"{ms(single)} vs {ms(batched)} per text: batching gains at most {single / batched:.2f}x",
    )


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


async def run(model: Path, queries: int, rounds: int) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="bench-embedder-") as tmp:
        run_dir = Path(tmp)
        await bench_start(model, run_dir, results)
        short, mixed = text_sets(model)
        await bench_latency(model, run_dir, short.take(queries + 1), rounds, results)
        workers = [await start_worker(model, run_dir / f"w{i}.sock") for i in range(2)]
        threaded = await start_worker(model, run_dir / "thread.sock", "--inline-max-tokens", "0")
        try:
            for texts in (short, mixed):
                await bench_throughput(workers, threaded, texts, queries * 2, results)
                bench_model_batching(model, texts, results)
            await bench_int8(model, run_dir, workers[0], short, results)
        finally:
            for worker in [*workers, threaded]:
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
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds, fresh workers each")
    parser.add_argument("--write", type=Path, default=None, help="results file to update")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="the client's event loop"
    )
    args = parser.parse_args()
    build_model.build(args.model)
    loop_factory = None
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        results = runner.run(run(args.model, args.queries, args.rounds))
    if args.write is not None:
        machine = (
            f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, client loop {args.loop}, "
            "workers on uvloop"
        )
        command = ".venv/bin/python bench/bench_embedder.py " + " ".join(sys.argv[1:])
        write_section(args.write, results.markdown(command.strip(), machine))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
