"""API keys and the secret they are hashed with: generation, hashing, recognition.

A key is ``gw-`` followed by 43 URL-safe characters from ``secrets``; it is shown once and stored
only as HMAC-SHA-256 under the server secret. Its first 11 characters (``gw-`` + 8) are its public
prefix, shown in listings so a person can tell keys apart. This module may touch only the secret
file in the data folder (``<data_dir>/key_secret``, mode 0600) when no secret is configured.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from gateway.core.toml_table import ConfigError

log = logging.getLogger(__name__)

KEY_PREFIX = "gw-"
ADMIN_KEY_PREFIX = "gw-admin-"
PREFIX_CHARS = len(KEY_PREFIX) + 8
SECRET_FILE = "key_secret"
KEY_SHAPE = re.compile(r"gw-[A-Za-z0-9_-]{40,64}")
MAX_KEY_CHARS = 256  # longer presented values are cut before hashing: bounded work per request
_CHECK_MESSAGE = b"gateway:key-secret-check"


def generate_key() -> str:
    """A new tenant key, to be shown once."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def generate_admin_key() -> str:
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


def generate_key_id() -> str:
    """The stable, non-secret id of a key (used to revoke it and in the ledger)."""
    return "key_" + secrets.token_hex(6)


def key_prefix(key: str) -> str:
    return key[:PREFIX_CHARS]


def is_key_shaped(value: str) -> bool:
    return KEY_SHAPE.fullmatch(value) is not None


def hash_key(secret: bytes, key: str) -> str:
    """The stored form of a key: hex HMAC-SHA-256 under the server secret."""
    data = key[:MAX_KEY_CHARS].encode("utf-8", "replace")
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def secret_check(secret: bytes) -> str:
    """A fingerprint of the secret, stored to notice when it changed (old keys stop working)."""
    return hmac.new(secret, _CHECK_MESSAGE, hashlib.sha256).hexdigest()


def load_or_create_secret(configured: str | None, data_dir: Path, env_name: str) -> bytes:
    """The key-hashing secret: the configured one, else the data folder's file (created once)."""
    if configured:
        return configured.encode("utf-8")
    path = data_dir / SECRET_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    log.warning(
        "%s is not set: generated a key-hashing secret in %s; keep that file, or every "
        "API key stops working",
        env_name,
        path,
    )
    return value.encode("ascii")


def _read_secret(path: Path) -> bytes:
    value = path.read_text("ascii").strip()
    if len(value) < 32:
        raise ConfigError(f"{path}: the key secret is too short; delete the file to regenerate")
    return value.encode("ascii")
