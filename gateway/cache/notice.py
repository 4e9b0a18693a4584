"""What one replica tells the others about the cache entries they share: a plain value, in a
module of its own so that both backends (``store``, ``pg_store``), their seam (``backend``) and
the peers' follower (``peers``) can name it without importing one another. Touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Notice:
    """What another replica did: stored entries, removed entries, or dropped a namespace; or
    ``resync``: notices may have been missed, compare everything with the database."""

    kind: Literal["stored", "removed", "dropped", "resync"]
    ids: tuple[int, ...] = ()
    namespace: str = ""
