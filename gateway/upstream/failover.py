"""Deployment health, circuit breakers, and the order in which candidates are tried.

Each deployment has a breaker: ``closed`` (serving), ``open`` (resting for a cooldown after
failures or a 429's ``Retry-After``, never longer than ``max_cooldown_s``) and ``half_open``
(one probe request allowed; success closes it, failure opens it again for twice as long, up to
``max_cooldown_s``). A rested deployment is ordered first, so its probe rides on live traffic
even while its partners are healthy. Health is judged per kind of call (plain answers and
streams apart, since a deployment can serve one and break the other) over a sliding window of
the last ``window_calls`` calls within ``window_s``: the breaker opens after a run of
``failure_threshold`` failures, or once ``min_calls`` calls are in the window and at least
``failure_rate`` of them failed.

``Failover.complete`` and ``Failover.open_stream`` try the candidates in order and move on after
any failure that happens before the first byte reaches the client: a connect error, a timeout,
a 5xx, a 429, an error inside a 200, or a stream that ends before its first content. A failure
that the request itself caused (a provider's 400) goes back to the client at once. A provider
that cannot express the request (``UNSUPPORTED``: say ``n=2`` to Anthropic) is skipped without
counting against its health or ``max_attempts``; if none can, the client gets a 400.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.core.answer import NATIVE_EVENTS, Attempt, Completion, Deployment, Json
from gateway.core.chat import ChatRequest
from gateway.core.config import FailoverSettings
from gateway.core.errors import (
    FailureKind,
    GatewayError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamFailed,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamRejected,
)
from gateway.upstream.attempt_trace import NO_TRACING, AttemptTracer
from gateway.upstream.providers.base import Provider

log = logging.getLogger(__name__)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CallKind(enum.Enum):
    """Calls judged apart: a deployment may serve whole answers and break every stream."""

    PLAIN = "plain"
    STREAM = "stream"


@dataclass(slots=True)
class Window:
    """One kind of call's recent outcomes: the last ``window_calls``, none older than
    ``window_s``, and the current run of failures."""

    outcomes: deque[tuple[float, bool]]
    consecutive_failures: int = 0

    def add(self, now: float, failed: bool) -> None:
        self.outcomes.append((now, failed))
        self.consecutive_failures = self.consecutive_failures + 1 if failed else 0

    def tripped(self, now: float, settings: FailoverSettings) -> bool:
        """A run of ``failure_threshold`` failures, or at least ``min_calls`` recent calls of
        which ``failure_rate`` or more failed."""
        if self.consecutive_failures >= settings.failure_threshold:
            return True
        while self.outcomes and self.outcomes[0][0] < now - settings.window_s:
            self.outcomes.popleft()
        calls = len(self.outcomes)
        failed = sum(1 for _, f in self.outcomes if f)
        return calls >= settings.min_calls and failed >= settings.failure_rate * calls

    def clear(self) -> None:
        self.outcomes.clear()
        self.consecutive_failures = 0


def _windows(settings: FailoverSettings) -> dict[CallKind, Window]:
    return {k: Window(deque(maxlen=settings.window_calls)) for k in CallKind}


@dataclass(slots=True)
class Health:
    """One deployment's breaker and the figures the dashboard shows."""

    deployment: Deployment
    settings: FailoverSettings
    state: BreakerState = BreakerState.CLOSED
    open_until: float = 0.0
    cooldown_s: float = 0.0
    probe_in_flight: bool = False
    rate_limited: bool = False  # the breaker rests because the provider said to (a 429)
    successes: int = 0
    failures: int = 0
    latency_ms_ewma: float | None = None
    ttft_ms_ewma: float | None = None
    recent_errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=20))
    windows: dict[CallKind, Window] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.windows = _windows(self.settings)

    @property
    def consecutive_failures(self) -> int:
        """The longest current run of failures over the kinds of call."""
        return max(w.consecutive_failures for w in self.windows.values())

    def rested(self, now: float) -> bool:
        """Whether the next request should be this deployment's probe: its rest is over and
        no probe is out."""
        if self.state is BreakerState.OPEN:
            return now >= self.open_until
        return self.state is BreakerState.HALF_OPEN and not self.probe_in_flight

    def available(self, now: float) -> bool:
        """Whether a request may go to this deployment now (claims the probe if half-open)."""
        if self.state is BreakerState.OPEN:
            if now < self.open_until:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probe_in_flight = False
        if self.state is BreakerState.HALF_OPEN:
            if self.probe_in_flight:
                return False
            self.probe_in_flight = True
        return True

    def record_success(self, latency_ms: float, ttft_ms: float | None = None,
                       kind: CallKind = CallKind.PLAIN, now: float | None = None) -> None:
        self.successes += 1
        if self.state is BreakerState.HALF_OPEN:
            for window in self.windows.values():
                window.clear()  # a passed probe starts the deployment afresh
        self.windows[kind].add(time.monotonic() if now is None else now, failed=False)
        if self.state is not BreakerState.OPEN:  # a straggler's success ends no rest
            self.state, self.cooldown_s, self.probe_in_flight = BreakerState.CLOSED, 0.0, False
            self.rate_limited = False
        self.latency_ms_ewma = _ewma(self.latency_ms_ewma, latency_ms)
        if ttft_ms is not None:
            self.ttft_ms_ewma = _ewma(self.ttft_ms_ewma, ttft_ms)

    def record_failure(self, failure: UpstreamFailure, now: float,
                       kind: CallKind = CallKind.PLAIN) -> None:
        self.failures += 1
        window = self.windows[kind]
        window.add(now, failed=True)
        self.recent_errors.append((time.time(), f"{failure.kind.value}: {failure.message}"))
        told = failure.kind is FailureKind.RATE_LIMITED and failure.retry_after_s is not None
        if self.state is BreakerState.OPEN:
            # A straggler sent before the breaker opened: its failure doubles no rest, though
            # a provider's own Retry-After may lengthen it (within the cap).
            if told and failure.retry_after_s is not None:
                rest_s = min(failure.retry_after_s, self.settings.max_cooldown_s)
                self.open_until = max(self.open_until, now + rest_s)
            return
        if self.state is BreakerState.HALF_OPEN or told or window.tripped(now, self.settings):
            self._open(failure, now)

    def _open(self, failure: UpstreamFailure, now: float) -> None:
        """Rest for a cooldown that doubles after each failed probe, or for as long as a 429
        asked; never longer than ``max_cooldown_s``."""
        base = self.cooldown_s * 2 if self.cooldown_s else self.settings.cooldown_s
        if failure.kind is FailureKind.RATE_LIMITED and failure.retry_after_s is not None:
            base = failure.retry_after_s
        cooldown = min(base, self.settings.max_cooldown_s)
        self.state, self.cooldown_s, self.probe_in_flight = BreakerState.OPEN, cooldown, False
        self.open_until = now + cooldown
        self.rate_limited = failure.kind is FailureKind.RATE_LIMITED
        log.warning("deployment %s opened for %.1f s: %s",
                    self.deployment.id, cooldown, failure.message)

    def release_probe(self) -> None:
        """A probe that ended without a verdict (client gone) frees the half-open slot."""
        self.probe_in_flight = False


def _ewma(old: float | None, new: float, alpha: float = 0.2) -> float:
    return new if old is None else old + alpha * (new - old)


@dataclass(frozen=True, slots=True)
class Answer:
    completion: Completion
    deployment: Deployment
    attempts: tuple[Attempt, ...]
    upstream_ms: float


@dataclass(slots=True)
class Stream:
    """An open stream whose first content has arrived: ``head`` is buffered, ``tail`` follows."""

    deployment: Deployment
    attempts: tuple[Attempt, ...]
    head: list[Json]
    tail: AsyncGenerator[Json, None]
    first_byte_ms: float
    health: Health


class Failover:
    """Tries candidate deployments in order of health and price."""

    def __init__(
        self,
        deployments: Sequence[Deployment],
        providers: Mapping[str, Provider],
        settings: FailoverSettings,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.health = {d.id: Health(d, settings) for d in deployments}
        self.tracer: AttemptTracer = NO_TRACING
        """Watches each attempt; the tracing context sets it when tracing is configured."""

    def order(self, candidates: Sequence[Deployment]) -> list[Deployment]:
        """A rested deployment first (it gets its one probe on live traffic, whatever its
        partners' health), then the closed ones, then the rest; cheapest first within each
        (input plus output price), then in configured order."""
        if len(candidates) == 1:
            return list(candidates)
        now = time.monotonic()

        def key(d: Deployment) -> tuple[int, float]:
            h = self.health[d.id]
            rank = 0 if h.rested(now) else 1 if h.state is BreakerState.CLOSED else 2
            return rank, d.model.input_price_per_mtok + d.model.output_price_per_mtok

        return sorted(candidates, key=key)

    def _tries(
        self, candidates: Sequence[Deployment], attempts: list[Attempt]
    ) -> Iterator[Deployment]:
        """The deployments to try, in order, each claimed only when its turn comes.

        A half-open breaker's single probe is claimed lazily, so a deployment that is never
        tried (an earlier one answered) never holds a probe it will not use. Attempts that a
        provider declined as unsupported do not count against ``max_attempts``.
        """
        for d in self.order(candidates):
            counted = sum(1 for a in attempts if _counts(a))
            if counted >= self.settings.max_attempts:
                return
            if self.health[d.id].available(time.monotonic()):
                yield d
        if not attempts:
            now = time.monotonic()
            wait = min(self.health[d.id].open_until for d in candidates) - now
            if all(self.health[d.id].rate_limited for d in candidates):
                raise UpstreamRateLimited(
                    "Every deployment for this model is rate limited by its provider; retry "
                    "after the time in Retry-After.", retry_after_s=max(wait, 0.0))
            raise ServiceUnavailable(
                "Every deployment for this model is resting after failures; retry shortly.",
                code="circuit_open",
                headers={"Retry-After": str(max(1, round(wait + 0.5)))},
            )

    def _fail(self, d: Deployment, failure: UpstreamFailure, kind: CallKind,
              attempts: Sequence[Attempt]) -> None:
        if not failure.retryable:
            self.health[d.id].release_probe()
            body = failure.body.get("error") if failure.body else None
            param = body.get("param") if isinstance(body, dict) else None
            code = body.get("code") if isinstance(body, dict) else None
            raise UpstreamRejected(
                failure.message,
                status=failure.status or 400,
                param=param if isinstance(param, str) else None,
                code=code if isinstance(code, str) else None,
                attempts=len(attempts),
            ) from failure
        log.info("attempt at %s failed: %s", d.id, failure.message)
        if failure.kind is FailureKind.UNSUPPORTED:
            self.health[d.id].release_probe()  # the deployment is fine; the request is not for it
        else:
            self.health[d.id].record_failure(failure, time.monotonic(), kind)

    async def complete(self, request: ChatRequest, candidates: Sequence[Deployment]) -> Answer:
        attempts: list[Attempt] = []
        for d in self._tries(candidates, attempts):
            span = self.tracer.attempt(request, d)
            started = time.perf_counter()
            try:
                completion = await self.providers[d.provider.name].complete(request, d)
            except UpstreamFailure as failure:
                span.failed(failure)
                attempts.append(Attempt(d, failure))
                self._fail(d, failure, CallKind.PLAIN, attempts)
                continue
            except BaseException as error:
                span.failed(error)
                self.health[d.id].release_probe()
                raise
            finally:
                span.release()
            span.answered(completion)
            elapsed_ms = (time.perf_counter() - started) * 1000
            self.health[d.id].record_success(elapsed_ms)
            attempts.append(Attempt(d, None))
            return Answer(completion, d, tuple(attempts), elapsed_ms)
        raise self._exhausted(attempts)

    async def open_stream(self, request: ChatRequest, candidates: Sequence[Deployment]) -> Stream:
        attempts: list[Attempt] = []
        for d in self._tries(candidates, attempts):
            span = self.tracer.attempt(request, d)
            started = time.perf_counter()
            tail = span.watch(self.providers[d.provider.name].stream(request, d))
            try:
                head = await _first_content(tail)
            except UpstreamFailure as failure:
                await tail.aclose()
                span.failed(failure)
                attempts.append(Attempt(d, failure))
                self._fail(d, failure, CallKind.STREAM, attempts)
                continue
            except BaseException as error:
                await tail.aclose()
                span.failed(error)
                self.health[d.id].release_probe()
                raise
            finally:
                span.release()
            attempts.append(Attempt(d, None))
            first_ms = (time.perf_counter() - started) * 1000
            return Stream(d, tuple(attempts), head, tail, first_ms, self.health[d.id])
        raise self._exhausted(attempts)


    def _exhausted(self, attempts: Sequence[Attempt]) -> GatewayError:
        """``exhausted``, except that when every attempt was refused with a 429 the client
        gets a 429 too, told to come back when the first of those deployments serves again."""
        failures = [a.failure for a in attempts if a.failure is not None and _counts(a)]
        if not failures or any(f.kind is not FailureKind.RATE_LIMITED for f in failures):
            return exhausted(attempts)
        now = time.monotonic()
        rests = [self._rest_s(a.deployment, a.failure, now) for a in attempts if a.failure]
        detail = "; ".join(f"{a.deployment.id}: {a.failure.message}" for a in attempts
                           if a.failure)
        return UpstreamRateLimited(f"Every deployment is rate limited ({detail}).",
                                   retry_after_s=min(rests), attempts=len(attempts),
                                   deployments=failed_deployments(attempts))

    def _rest_s(self, d: Deployment, failure: UpstreamFailure, now: float) -> float:
        """How long ``d`` rests after ``failure``: its open breaker's time left, else what the
        provider asked for, else the configured cooldown; never past ``max_cooldown_s``."""
        health = self.health[d.id]
        if health.state is BreakerState.OPEN and health.open_until > now:
            rest = health.open_until - now
        else:
            rest = failure.retry_after_s or self.settings.cooldown_s
        return min(rest, self.settings.max_cooldown_s)


def _counts(attempt: Attempt) -> bool:
    return attempt.failure is None or attempt.failure.kind is not FailureKind.UNSUPPORTED


def _has_content(chunk: Json) -> bool:
    native = chunk.get(NATIVE_EVENTS)
    if native and any(e.get("type") == "content_block_delta" for e in native):
        return True  # thinking streams for a long time before any text: that is content too
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or delta.get("refusal"):
            return True
        if choice.get("finish_reason"):
            return True
    return False


async def _first_content(stream: AsyncIterator[Json]) -> list[Json]:
    """Chunks up to and including the first with content; a stream that ends first fails."""
    head: list[Json] = []
    async for chunk in stream:
        head.append(chunk)
        if _has_content(chunk):
            return head
    raise UpstreamFailure(FailureKind.EMPTY_STREAM, "stream ended before any content")


_NOT_CALLED = frozenset({FailureKind.UNSUPPORTED, FailureKind.CIRCUIT_OPEN})


def failed_deployments(attempts: Sequence[Attempt]) -> tuple[str, ...]:
    """The deployments that were called and failed (not those skipped unasked)."""
    return tuple(a.deployment.id for a in attempts
                 if a.failure is not None and a.failure.kind not in _NOT_CALLED)


def exhausted(attempts: Sequence[Attempt]) -> GatewayError:
    """The client's error once every candidate failed: 504, 503 or 502 by what went wrong."""
    kinds = {a.failure.kind for a in attempts if a.failure}
    failed = failed_deployments(attempts)
    detail = "; ".join(f"{a.deployment.id}: {a.failure.message}" for a in attempts if a.failure)
    if kinds == {FailureKind.UNSUPPORTED}:
        return InvalidRequest(f"No deployment of this model supports the request ({detail}).",
                              code="unsupported_by_provider")
    if kinds == {FailureKind.TIMEOUT}:
        return UpstreamFailed(f"Every deployment timed out ({detail}).", status=504,
                              code="upstream_timeout", attempts=len(attempts),
                              deployments=failed)
    return UpstreamFailed(f"Every deployment failed ({detail}).", status=502,
                          code="upstream_failed", attempts=len(attempts), deployments=failed)
