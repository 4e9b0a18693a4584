"""Settings: the embedded default, a user's TOML file and the environment, validated once.

The layers (``gateway.core.layering``): the user's file is laid over the embedded default
(``default.toml``), then the ``GATEWAY_*`` variables over both; the result is validated once into
frozen values. This is the only module that reads the environment. A bad value fails at
start-up with a ``ConfigError`` that names the key (``providers[1].base_url: expected a string``).
Secrets never live in the file: a provider names the variable that holds its key.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from embedder_worker.settings import DEFAULT_LANES, DEFAULT_THREADS, EmbedderSettings
from gateway.core.cache_settings import CacheSettings, parse_cache
from gateway.core.cluster import ClusterSettings, parse_cluster
from gateway.core.layering import environment_layer, layer, layer_file
from gateway.core.observability_settings import ObservabilitySettings, parse_observability
from gateway.core.routing_settings import RoutingSettings, packaged_routes_file, parse_routing
from gateway.core.tenant_settings import TenantSettings, parse_tenants
from gateway.core.toml_table import ConfigError, Table, read_text

log = logging.getLogger(__name__)

PROVIDER_KINDS = ("openai", "gemini", "anthropic", "demo")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-phase upstream timeouts; streams have no total timeout."""

    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 60.0
    chunk_timeout_s: float = 60.0

    @classmethod
    def from_table(cls, t: Table, base: Timeouts | None = None) -> Timeouts:
        base = base or cls()
        return cls(
            connect_timeout_s=t.positive("connect_timeout_s", base.connect_timeout_s),
            first_byte_timeout_s=t.positive("first_byte_timeout_s", base.first_byte_timeout_s),
            chunk_timeout_s=t.positive("chunk_timeout_s", base.chunk_timeout_s),
        )


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    kind: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeouts: Timeouts = Timeouts()
    headers: Mapping[str, str] = field(default_factory=dict)
    word_delay_ms: float = 0.0  # demo only: pacing of its word-by-word stream
    fallback: bool = False


SAME_AS_INPUT = -1.0
"""A cached-read or cache-write price not given: the model's input price (no price the
configuration accepts is negative)."""
TWICE_INPUT = -2.0
"""A 1-hour cache-write price not given: twice the model's input price, what Anthropic bills."""
_INPUT_TIMES = {SAME_AS_INPUT: 1.0, TWICE_INPUT: 2.0}


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """One deployment: a public model name served by one provider's upstream model."""

    name: str
    provider: str
    upstream_model: str
    tier: str
    input_price_per_mtok: float = 0.0
    output_price_per_mtok: float = 0.0
    cached_input_price_per_mtok: float = SAME_AS_INPUT
    """The configuration's, or the input price when it names none: every provider discounts
    cached tokens and none gives them away, so the input price is the bound that never
    undercharges."""
    cache_write_price_per_mtok: float = SAME_AS_INPUT
    """For prompt tokens written to the provider's cache (for 5 minutes, at Anthropic): the
    configuration's, or the input price when it names none (as before the key existed)."""
    cache_write_1h_price_per_mtok: float = TWICE_INPUT
    """For prompt tokens Anthropic writes to its cache for an hour: the configuration's, or
    twice the input price (Anthropic's) when it names none; were it the 5-minute price, a model
    configured before this key would undercharge every such write."""
    deployment_id: str = field(init=False, repr=False, compare=False)
    """``provider/upstream_model``: computed once, read on every request."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "deployment_id", f"{self.provider}/{self.upstream_model}")
        # The prices not given, from the configuration or in code: a multiple of the input's.
        for name in ("cached_input_price_per_mtok", "cache_write_price_per_mtok",
                     "cache_write_1h_price_per_mtok"):
            if (times := _INPUT_TIMES.get(getattr(self, name))) is not None:
                object.__setattr__(self, name, self.input_price_per_mtok * times)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 * 1024 * 1024
    shutdown_grace_s: float = 10.0
    data_dir: Path = Path("data")
    response_retention_days: float = 30.0
    """How long a stored Responses API response can be fetched or continued."""
    header_timeout_s: float = 10.0
    """From a request's first byte until its whole head has arrived (408 past it)."""
    body_timeout_s: float = 30.0
    """For reading a request's whole body (408 past it)."""
    idle_timeout_s: float = 75.0
    """A connection with no request under way is closed after this long."""
    write_timeout_s: float = 60.0
    """A client that reads nothing of its answer (a stream, or any answer's end) for this long
    while its socket is full is cut (499; a stream's upstream connection closes)."""
    max_connections: int = 1024
    """Open client connections; one more gets a 503 and is closed."""
    processes: int = 1
    """Gateway processes sharing the port (SO_REUSEPORT) under one supervisor
    (``gateway.core.processes``); more than one needs the cluster backends."""
    process_index: int | None = None
    """Set by that supervisor on each of its children (never read from a file): which one this
    is, so it binds with SO_REUSEPORT and labels what it reports."""
    node_dir: Path | None = None
    """Set by that supervisor too: the folder where each of its children also listens on a Unix
    socket, so the one a scrape lands on can gather the others' metrics."""


@dataclass(frozen=True, slots=True)
class FailoverSettings:
    failure_threshold: int = 3
    """A run of this many failures (of one kind of call) opens the breaker."""
    failure_rate: float = 0.5
    """Or this share of failed calls in the window, once it holds ``min_calls`` calls."""
    min_calls: int = 10
    window_calls: int = 20
    window_s: float = 60.0
    cooldown_s: float = 30.0
    max_cooldown_s: float = 300.0
    """The longest rest, a 429's ``Retry-After`` included."""
    max_attempts: int = 4


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings
    upstream: Timeouts
    failover: FailoverSettings
    providers: tuple[ProviderSettings, ...]
    models: tuple[ModelSettings, ...]
    embedder: EmbedderSettings | None
    tenants: TenantSettings = field(default_factory=TenantSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    routing: RoutingSettings = field(
        default_factory=lambda: RoutingSettings(routes_file=packaged_routes_file())
    )
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    source: str = "<memory>"
    provider_notes: tuple[str, ...] = ()
    """Which providers are enabled, skipped or off, and why: logged when the gateway starts."""

    def provider(self, name: str) -> ProviderSettings:
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)


Env = Mapping[str, str]


def _server(t: Table, base_dir: Path) -> ServerSettings:
    port = t.get("port", int, 8080)
    if not 0 <= port <= 65535:
        raise t.fail("port", "a port number from 0 to 65535")
    data_dir = Path(t.get("data_dir", str, "data"))
    return ServerSettings(
        host=t.get("host", str, "127.0.0.1"),
        port=port,
        max_body_bytes=t.count("max_body_bytes", 4 * 1024 * 1024),
        shutdown_grace_s=t.non_negative("shutdown_grace_s", 10.0),
        data_dir=base_dir / data_dir,  # an absolute path stays itself
        response_retention_days=t.positive("response_retention_days", 30.0),
        header_timeout_s=t.positive("header_timeout_s", 10.0),
        body_timeout_s=t.positive("body_timeout_s", 30.0),
        idle_timeout_s=t.positive("idle_timeout_s", 75.0),
        write_timeout_s=t.positive("write_timeout_s", 60.0),
        max_connections=t.count("max_connections", 1024),
        processes=t.count("processes", 1),
    )


def _failover(t: Table) -> FailoverSettings:
    rate = t.positive("failure_rate", 0.5)
    if rate > 1:
        raise t.fail("failure_rate", "a share of calls from 0 to 1")
    return FailoverSettings(
        failure_threshold=t.count("failure_threshold", 3),
        failure_rate=rate,
        min_calls=t.count("min_calls", 10),
        window_calls=t.count("window_calls", 20),
        window_s=t.positive("window_s", 60.0),
        cooldown_s=t.positive("cooldown_s", 30.0),
        max_cooldown_s=t.positive("max_cooldown_s", 300.0),
        max_attempts=t.count("max_attempts", 4),
    )


def _provider(
    t: Table, defaults: Timeouts, env: Env, keys_needed: bool = True
) -> ProviderSettings | None:
    """A provider, or None when its key is absent from the environment and it is optional (or
    no key is needed: an admin command)."""
    name = t.required("name", str)
    kind = t.choice("kind", PROVIDER_KINDS, "openai")
    key_env = t.get("api_key_env", str, "")
    if "api_key" in t.data:
        raise ConfigError(f"{t.key('api_key')}: secrets do not go in the file; use api_key_env")
    api_key = env.get(key_env) if key_env else None
    required = t.get("required", bool, True)
    base_url = t.get("base_url", str, "")
    headers = t.get("headers", dict, {})
    provider = ProviderSettings(
        name=name,
        kind=kind,
        base_url=base_url.rstrip("/"),
        api_key=api_key or None,
        timeouts=Timeouts.from_table(t.table("timeouts"), defaults),
        headers={str(k): str(v) for k, v in headers.items()},
        word_delay_ms=t.non_negative("word_delay_ms", 0.0),
        fallback=t.get("fallback", bool, False),
    )
    t.reject_unknown()
    if kind != "demo" and not base_url:
        raise ConfigError(f"{t.key('base_url')}: required for a {kind} provider")
    if key_env and not api_key:
        if required and keys_needed:
            raise ConfigError(f"{t.key('api_key_env')}: environment variable {key_env} is not set")
        log.debug("provider %s skipped: %s is not set", name, key_env)
        return None
    return provider


def _providers(
    root: Table, defaults: Timeouts, env: Env, keys_needed: bool = True
) -> tuple[tuple[ProviderSettings, ...], tuple[str, ...]]:
    """The enabled providers, and what an operator should be told about the choice."""
    tables = root.tables("providers")
    read = [p for t in tables if (p := _provider(t, defaults, env, keys_needed))]
    # Fallback providers (the demo) serve only when no other provider is enabled.
    chosen = [p for p in read if not p.fallback] or read
    names = [p.name for p in chosen]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"providers: name {name!r} is used twice")
    skipped = [f"{t.data.get('name')} ({t.data.get('api_key_env')} is not set)" for t in tables
               if t.data.get("name") not in {p.name for p in read}]
    notes = [f"providers enabled: {', '.join(names) or 'none'}"]
    if skipped:
        notes.append(f"providers skipped: {', '.join(skipped)}")
    dropped = [p.name for p in read if p.fallback and p not in chosen]
    if dropped:
        notes.append(f"fallback provider {', '.join(dropped)} is off: it serves only while no "
                     "other provider is enabled")
    elif any(p.fallback for p in chosen):
        notes.append(f"no provider key is set: fallback provider {', '.join(names)} answers "
                     "(its replies say so); setting a key turns it off")
    return tuple(chosen), tuple(notes)


def _model(t: Table, providers: Mapping[str, ProviderSettings]) -> ModelSettings | None:
    provider = t.required("provider", str)
    model = ModelSettings(
        name=t.required("name", str),
        provider=provider,
        upstream_model=t.get("upstream_model", str, t.data.get("name", "")),
        tier=t.get("tier", str, "default"),
        input_price_per_mtok=t.non_negative("input_price_per_mtok", 0.0),
        output_price_per_mtok=t.non_negative("output_price_per_mtok", 0.0),
        cached_input_price_per_mtok=_price(t, "cached_input_price_per_mtok", SAME_AS_INPUT),
        cache_write_price_per_mtok=_price(t, "cache_write_price_per_mtok", SAME_AS_INPUT),
        cache_write_1h_price_per_mtok=_price(t, "cache_write_1h_price_per_mtok", TWICE_INPUT),
    )
    t.reject_unknown()
    if not model.name or model.name == "auto":
        raise t.fail("name", "a model name other than 'auto'")
    return model if provider in providers else None


def _price(t: Table, name: str, unset: float) -> float:
    """The price ``name`` if the table gives one, else ``unset``: ``SAME_AS_INPUT`` or
    ``TWICE_INPUT``, which ``ModelSettings`` resolves."""
    return t.non_negative(name, 0.0) if name in t.data else unset


def _models(root: Table, providers: tuple[ProviderSettings, ...]) -> tuple[ModelSettings, ...]:
    by_name = {p.name: p for p in providers}
    declared = {t.data.get("name") for t in root.tables("providers")}
    models = []
    for t in root.tables("models"):
        name = t.data.get("provider")
        if name not in declared:
            raise ConfigError(f"{t.key('provider')}: no provider named {name!r}")
        if (model := _model(t, by_name)) is not None:
            models.append(model)
    ids = [m.deployment_id for m in models]
    for i, dep in enumerate(ids):
        if ids.index(dep) != i:
            raise ConfigError(f"models[{i}]: deployment {dep!r} is declared twice")
    return tuple(models)


def _embedder(t: Table, base_dir: Path) -> EmbedderSettings | None:
    if not t.get("enabled", bool, True):
        t.data = {}
        return None
    model_dir = Path(t.get("model_dir", str, "models/all-MiniLM-L6-v2"))
    sockets = tuple(Path(s) for s in t.strings("sockets"))
    settings = EmbedderSettings(
        model_dir=base_dir / model_dir,
        workers=t.count("workers", 1),
        threads=t.count("threads", DEFAULT_THREADS),
        lanes=t.count("lanes", DEFAULT_LANES),
        sockets=sockets,
        call_timeout_ms=t.positive("call_timeout_ms", 2000.0),
        max_batch=t.count("max_batch", 32),
        max_wait_ms=t.non_negative("max_wait_ms", 2.0),
        lru_size=t.count("lru_size", 1024, minimum=0),
        pooling=t.optional("pooling", str),
        normalize=t.optional("normalize", bool),
        max_length=t.optional("max_length", int),
        query_prefix=t.get("query_prefix", str, ""),
        quantize=t.get("quantize", bool, False),
    )
    if settings.pooling not in (None, "mean", "cls"):
        raise t.fail("pooling", "'mean' or 'cls'")
    t.reject_unknown()
    return settings


def parse(
    data: Mapping[str, Any], *, env: Env, base_dir: Path, source: str,
    providers_needed: bool = True,
) -> Settings:
    """Validate a whole configuration. ``providers_needed=False`` (admin commands, which touch
    only the store) skips providers whose key is missing instead of failing on them."""
    root = Table(data)
    upstream = Timeouts.from_table(root.table("upstream"))
    providers, provider_notes = _providers(root, upstream, env, providers_needed)
    if not providers and providers_needed:
        raise ConfigError("providers: no provider is enabled")
    models = _models(root, providers)
    if not models and providers_needed:
        raise ConfigError("models: no model is served by an enabled provider")
    server_t, failover_t = root.table("server"), root.table("failover")
    server = _server(server_t, base_dir)
    settings = Settings(
        server=server,
        upstream=upstream,
        failover=_failover(failover_t),
        providers=providers,
        models=models,
        embedder=_embedder(root.table("embedder"), base_dir),
        tenants=parse_tenants(root.table("tenants"), env, base_dir),
        routing=parse_routing(root.table("routing"), base_dir),
        observability=parse_observability(root.table("observability"), base_dir, env),
        cache=parse_cache(root.table("cache"), server.data_dir),
        cluster=parse_cluster(root.table("cluster"), env),
        source=source,
        provider_notes=provider_notes,
    )
    server_t.reject_unknown()
    failover_t.reject_unknown()
    root.get("upstream", dict, {})
    for name in ("embedder", "tenants", "routing", "observability", "cache", "cluster"):
        root.get(name, dict, {})
    root.reject_unknown()
    return settings


CONFIG_VAR = "GATEWAY_CONFIG"
LOG_LEVEL_VAR = "GATEWAY_LOG_LEVEL"


def load(
    path: Path | None = None, *, env: Env | None = None, providers_needed: bool = True
) -> Settings:
    """The settings from the embedded default, the file at ``path`` (else ``$GATEWAY_CONFIG``,
    else none) laid over it, and the ``GATEWAY_*`` variables over both.
    ``providers_needed=False``: an admin command's settings (see ``parse``)."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_VAR):
        path = Path(env[CONFIG_VAR])
    default = _read_toml(
        resources.files("gateway.core").joinpath("default.toml").read_text("utf-8"),
        "<embedded default>")
    data, source, base_dir = default, "<embedded default>", Path.cwd()
    if path is not None:
        text = read_text(path)
        source, base_dir = f"{path} over the embedded default", path.resolve().parent
        data = layer_file(_anchored(default, Path.cwd()), _read_toml(text, str(path)))
    overrides = environment_layer(env)
    if overrides:
        log.debug("environment overrides: %s", ", ".join(
            f"{table}.{key}" for table, keys in overrides.items() for key in keys))
        data = layer(data, overrides)
    return parse(data, env=env, base_dir=base_dir, source=source,
                 providers_needed=providers_needed)


# The default's relative paths mean the working directory, as they do with no file at all; a
# path the user's file gives is relative to that file's folder.
_DEFAULT_PATHS = (("server", "data_dir"), ("embedder", "model_dir"))


def _anchored(default: Mapping[str, Any], cwd: Path) -> dict[str, Any]:
    anchors: dict[str, Any] = {}
    for table, key in _DEFAULT_PATHS:
        value = default.get(table, {}).get(key)
        if isinstance(value, str):
            anchors.setdefault(table, {})[key] = str(cwd / value)
    return layer(default, anchors)


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from exc


def env_value(name: str, env: Env | None = None) -> str | None:
    """A value from the environment, for the CLI's secrets (admin key, key-hashing secret)."""
    return (os.environ if env is None else env).get(name) or None
