"""Opaque, per-tenant names for cache entries, as shown in ``x-gateway-cache-entry``.

An entry's row id is one sequence for the whole cache: shown as is, it would tell every tenant
how large the cache is across tenants, and how fast it grows. The name a tenant sees is instead
``ce_`` and 16 hex digits: the id put through a keyed permutation of 64-bit numbers (a
four-round Feistel network whose round function is keyed BLAKE2b over the tenant and the
half-block), so two tenants see unrelated names for the same entry and successive entries look
unrelated. Only the gateway, holding the key, turns a name back into an id: the cache admin API
does, given the name and the tenant that saw it.

The key is made once and kept beside the cache's database (``cache_entry_key``, mode 0600), so
names stay valid across restarts. Touches only that file.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

KEY_FILE = "cache_entry_key"
PREFIX = "ce_"
_ROUNDS = 4
_HALF = 0xFFFF_FFFF


class EntryTokens:
    """Turns entry ids into a tenant's opaque names and back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def beside(cls, database: Path) -> EntryTokens:
        """The key kept in the database's folder, made on first use."""
        path = database.parent / KEY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            return cls(bytes.fromhex(path.read_text("ascii").strip()))
        # Written whole under a name of its own, then linked into place: a process that opens
        # the same folder at once reads either no file or the whole key, never an empty one,
        # and of two processes making it, the first link wins and the other reads that key.
        key = secrets.token_bytes(32)
        draft = path.with_name(f"{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(key.hex() + "\n")
            os.link(draft, path)
        except FileExistsError:
            return cls(bytes.fromhex(path.read_text("ascii").strip()))
        finally:
            draft.unlink(missing_ok=True)
        return cls(key)

    def name(self, tenant: str, entry_id: int) -> str:
        left, right = entry_id >> 32 & _HALF, entry_id & _HALF
        for r in range(_ROUNDS):
            left, right = right, left ^ self._round(tenant, r, right)
        return f"{PREFIX}{left << 32 | right:016x}"

    def entry_id(self, tenant: str, name: str) -> int | None:
        """The id behind ``name`` as ``tenant`` saw it; None for what is not a name."""
        digits = name.removeprefix(PREFIX)
        if not name.startswith(PREFIX) or len(digits) != 16:
            return None
        try:
            value = int(digits, 16)
        except ValueError:
            return None
        left, right = value >> 32, value & _HALF
        for r in reversed(range(_ROUNDS)):
            left, right = right ^ self._round(tenant, r, left), left
        return left << 32 | right

    def _round(self, tenant: str, r: int, half: int) -> int:
        digest = hashlib.blake2b(f"{tenant}\0{r}\0{half}".encode(), key=self._key, digest_size=4)
        return int.from_bytes(digest.digest(), "big")
