"""The ``[cache]`` configuration section, parsed into a frozen ``CacheSettings``.

``parse_cache(t, base_dir)`` validates the table; every error names its key. Relative paths resolve
against ``base_dir`` (the gateway passes ``server.data_dir``). When ``threshold`` is absent, the
threshold written by ``gateway cache fit --write`` (``calibration_file``) is used if it exists, else
``DEFAULT_THRESHOLD``. Reading that small file is the only disk access, and it happens here, once.
``verifier`` names the learned verifier's weights (``"off"``, the default: none, the
cosine-and-margin rule serves; ``"builtin"``: the file shipped beside this module); the cache
loads it when it opens and uses it only when it was trained on the configured embedding model.
``verifier_threshold`` (a probability) overrides its operating point; a calibration file
written for the verifier rule (``"rule": "verifier"``) sets it when the config does not.

    [cache]
    enabled = true
    database = "cache.sqlite3"            # SQLite: the source of truth
    index_dir = "cache_index"             # hnswlib files, rebuilt from SQLite when unusable
    calibration_file = "cache_calibration.json"
    threshold = 0.95                      # cosine; omit to use the calibration file
    guards = true                         # lexical checks before a semantic hit is served
    fold_typos = true                     # misspelt words corrected in the semantic key
    verifier = "off"                      # "off" | "builtin" | path to verifier weights
    verifier_threshold = 0.9              # probability; omit for the verifier's own
    default_policy = "semantic"           # "semantic" | "exact" | "off"
    ttl_s = 604800                        # 0 = entries never expire
    max_entries = 100000                  # least recently used entries are evicted beyond it
    save_interval_s = 30.0                # how often a changed index is written to disk
    flush_interval_s = 0.2                # how often new entries are written to SQLite
    max_pending = 10000                   # entries waiting for that write; more are dropped
    max_answer_bytes = 1048576            # larger answers are not stored
    candidates = 8                        # neighbours checked by the guards per lookup
    ef_search = 32                        # neighbours explored per search: recall against speed
    ef_construction = 128
    m = 16

    [cache.tenants.acme]                  # per-tenant overrides
    policy = "exact"
    namespace = "shared-docs"             # share entries with other tenants naming it
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from gateway.core.toml_table import ConfigError, Table

log = logging.getLogger(__name__)

Policy = Literal["semantic", "exact", "off"]
POLICIES: tuple[Policy, ...] = ("semantic", "exact", "off")
# Stricter policies sort first: a request gets the strictest of its tenant's and its route's.
_STRICTNESS: dict[Policy, int] = {"off": 0, "exact": 1, "semantic": 2}
DEFAULT_THRESHOLD = 0.95
CALIBRATION_VERSION = 1
# The shipped verifier is cache data and lives beside the cache package.
BUILTIN_VERIFIER = Path(__file__).parent.parent / "cache" / "verifier.json"


@dataclass(frozen=True, slots=True)
class TenantCache:
    """One tenant's overrides: a stricter policy, or a shared namespace it opts into."""

    policy: Policy | None = None
    namespace: str | None = None


# 32 finds 99.95% of near copies (cosine ~0.97) among 100,000 entries, 16 only 99.2%; against 64
# it takes ~0.1 ms off a semantic hit and a miss (bench/RESULTS.md, "Semantic cache").
EF_SEARCH = 32


@dataclass(frozen=True, slots=True)
class IndexParams:
    """hnswlib parameters: graph degree ``m`` and the candidate list sizes."""

    m: int = 16
    ef_construction: int = 128
    ef_search: int = EF_SEARCH


@dataclass(frozen=True, slots=True)
class CacheSettings:
    enabled: bool = True
    database: Path = Path("data/cache.sqlite3")
    index_dir: Path = Path("data/cache_index")
    calibration_file: Path = Path("data/cache_calibration.json")
    threshold: float = DEFAULT_THRESHOLD
    threshold_source: str = "default"
    guards: bool = True
    fold_typos: bool = True  # misspelt words corrected before embedding (cache.spelling)
    verifier: Path | None = None  # off: the cosine-and-margin rule serves
    verifier_threshold: float | None = None  # None: the verifier file's operating point
    default_policy: Policy = "semantic"
    ttl_s: float = 7 * 86400.0
    max_entries: int = 100_000
    save_interval_s: float = 30.0
    flush_interval_s: float = 0.2
    max_pending: int = 10_000
    max_answer_bytes: int = 1 << 20
    candidates: int = 8
    index: IndexParams = IndexParams()
    tenants: Mapping[str, TenantCache] = field(default_factory=dict)

    def namespace_for(self, tenant_id: str) -> str:
        """The namespace a tenant's entries live in: its own, unless it opted into a shared one."""
        shared = self.tenants.get(tenant_id, TenantCache()).namespace
        return f"shared:{shared}" if shared else f"tenant:{tenant_id}"

    def policy_for(self, tenant_id: str | None, route_policy: Policy | None = None) -> Policy:
        """The strictest of the default (or the tenant's) policy and the route's."""
        if not self.enabled:
            return "off"
        own = self.tenants.get(tenant_id or "", TenantCache()).policy or self.default_policy
        return strictest(own, route_policy or own)


def strictest(a: Policy, b: Policy) -> Policy:
    return a if _STRICTNESS[a] <= _STRICTNESS[b] else b


def parse_cache(t: Table, base_dir: Path) -> CacheSettings:
    """Validate the ``[cache]`` table; relative paths resolve against ``base_dir``."""
    calibration_file = _path(t, "calibration_file", "cache_calibration.json", base_dir)
    calibrated = read_calibration(calibration_file)
    threshold, source = _threshold(t, calibrated, calibration_file)
    settings = CacheSettings(
        enabled=t.get("enabled", bool, True),
        database=_path(t, "database", "cache.sqlite3", base_dir),
        index_dir=_path(t, "index_dir", "cache_index", base_dir),
        calibration_file=calibration_file,
        threshold=threshold,
        threshold_source=source,
        guards=t.get("guards", bool, True),
        fold_typos=t.get("fold_typos", bool, True),
        verifier=_verifier(t, base_dir),
        verifier_threshold=_verifier_threshold(t, calibrated),
        default_policy=cast(Policy, t.choice("default_policy", POLICIES, "semantic")),
        ttl_s=t.non_negative("ttl_s", 7 * 86400.0),
        max_entries=t.count("max_entries", 100_000),
        save_interval_s=t.positive("save_interval_s", 30.0),
        flush_interval_s=t.positive("flush_interval_s", 0.2),
        max_pending=t.count("max_pending", 10_000),
        max_answer_bytes=t.count("max_answer_bytes", 1 << 20),
        candidates=t.count("candidates", 8),
        index=IndexParams(
            m=t.count("m", 16, minimum=2),
            ef_construction=t.count("ef_construction", 128),
            ef_search=t.count("ef_search", EF_SEARCH),
        ),
        tenants=_tenants(t.table("tenants")),
    )
    t.reject_unknown()
    return settings


def _path(t: Table, name: str, default: str, base_dir: Path) -> Path:
    return base_dir / t.get(name, str, default)  # an absolute path stays itself


def _threshold(t: Table, calibrated: tuple[str, float] | None,
               calibration_file: Path) -> tuple[float, str]:
    if "threshold" in t.data:
        value = t.get("threshold", float, DEFAULT_THRESHOLD)
        if not 0.0 < value <= 1.0:
            raise t.fail("threshold", "a cosine similarity above 0 and at most 1")
        return value, "config"
    if calibrated is not None and calibrated[0] == "cosine":
        return calibrated[1], str(calibration_file)
    return DEFAULT_THRESHOLD, "default"


def _verifier(t: Table, base_dir: Path) -> Path | None:
    name = t.get("verifier", str, "off")
    if name == "off":
        return None
    if name == "builtin":
        return BUILTIN_VERIFIER
    if not name:
        raise t.fail("verifier", '"builtin", "off" or the path of a verifier file')
    return base_dir / name  # an absolute path stays itself


def _verifier_threshold(t: Table, calibrated: tuple[str, float] | None) -> float | None:
    if "verifier_threshold" in t.data:
        value = t.get("verifier_threshold", float, 0.5)
        if not 0.0 <= value <= 1.0:
            raise t.fail("verifier_threshold", "a probability from 0 to 1")
        return value
    if calibrated is not None and calibrated[0] == "verifier":
        return calibrated[1]
    return None


def read_calibration(path: Path) -> tuple[str, float] | None:
    """The rule (``"cosine"`` or ``"verifier"``) and threshold in a calibration file, None when
    there is none; a bad file is an error."""
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cache.calibration_file: cannot read {path} ({exc})") from exc
    value = raw.get("threshold") if isinstance(raw, dict) else None
    rule = raw.get("rule", "cosine") if isinstance(raw, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"cache.calibration_file: {path} holds no threshold from 0 to 1")
    if rule not in ("cosine", "verifier"):
        raise ConfigError(f"cache.calibration_file: {path} names no rule (cosine or verifier)")
    return str(rule), float(value)


def _tenants(t: Table) -> dict[str, TenantCache]:
    out = {}
    for tenant_id in list(t.data):
        sub = t.table(tenant_id)
        policy = sub.optional("policy", str)
        if policy is not None and policy not in POLICIES:
            raise sub.fail("policy", "one of " + ", ".join(POLICIES))
        namespace = sub.optional("namespace", str)
        if namespace == "":
            raise sub.fail("namespace", "a non-empty string")
        out[tenant_id] = TenantCache(policy=policy, namespace=namespace)
        sub.reject_unknown()
    return out
