"""The process's open-file limit, raised at start so that ``[server] max_connections`` can be met.

Every stream in flight holds two descriptors (the client's connection and the upstream's), and
distributions start processes with a soft ``RLIMIT_NOFILE`` of 1024: the 512th concurrent stream
would then fail to accept or to connect. ``raise_open_files_limit`` lifts the soft limit to the
hard one (what an unprivileged process may do) and says in the log what it found; when even the
hard limit is below what ``max_connections`` needs, the warning names what the operator must
raise (``ulimit -n``, systemd's ``LimitNOFILE``, the container's ``nofile``). Touches only this
process's resource limits.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

SPARE_FDS = 64
"""Descriptors beyond two per connection: listening sockets, workers, SQLite, logs, the loop."""


@dataclass(frozen=True, slots=True)
class OpenFiles:
    before: int
    soft: int
    hard: int

    def enough_for(self, connections: int) -> bool:
        return self.soft >= needed_fds(connections)


def needed_fds(connections: int) -> int:
    return 2 * connections + SPARE_FDS


def raise_open_files_limit(max_connections: int) -> OpenFiles:
    """Set the soft open-files limit to the hard one, log it, and warn when it is too low."""
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = before
    if hard == resource.RLIM_INFINITY or before < hard:
        # Some kernels refuse an infinite soft limit; their nr_open ceiling is far above need.
        target = hard if hard != resource.RLIM_INFINITY else max(before, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the soft limit %d to %d: %s", before, target, exc)
    limits = OpenFiles(before, soft, hard)
    log.info("open files: soft limit %d (was %d, hard limit %s)", soft, before,
             "unlimited" if hard == resource.RLIM_INFINITY else hard)
    if not limits.enough_for(max_connections):
        log.warning(
            "open files: [server] max_connections = %d needs about %d descriptors (two a "
            "stream) but the limit is %d: raise the hard limit (ulimit -n, LimitNOFILE, the "
            "container's nofile) or lower max_connections",
            max_connections, needed_fds(max_connections), soft,
        )
    return limits
