"""The open-files limit raised at start (``gateway/core/fd_limit.py``), in this process and in a
real ``gateway serve`` started with a low soft limit."""

from __future__ import annotations

import asyncio
import logging
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.fd_limit import needed_fds, raise_open_files_limit
from tests.conftest import ROOT
from tests.test_serve import _config, _free_port, _wait_for_line

LOW_SOFT = 256


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    """This process's soft limit lowered (the hard one kept), restored afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT:
        pytest.skip(f"the hard open-files limit ({hard}) leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT, hard))
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_limit_is_raised_to_the_hard_one_and_logged(
    low_soft_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.core.fd_limit"):
        limits = raise_open_files_limit(max_connections=16)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == limits.soft and limits.before == LOW_SOFT and hard == low_soft_limit
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert f"soft limit {soft} (was {LOW_SOFT}" in caplog.text


def test_a_hard_limit_below_what_max_connections_needs_is_a_warning_naming_the_fix() -> None:
    """In a child process: lowering a hard limit cannot be undone."""
    script = (
        "import logging, resource\n"
        "logging.basicConfig()\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))\n"
        "from gateway.core.fd_limit import raise_open_files_limit\n"
        "print(raise_open_files_limit(1024).soft)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=True)
    assert done.stdout.strip() == "300"
    assert f"needs about {needed_fds(1024)} descriptors" in done.stderr
    assert "ulimit -n" in done.stderr and "nofile" in done.stderr


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-files line in /proc/PID/limits")


async def test_gateway_serve_raises_a_low_soft_limit_at_start(tmp_path: Path) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= LOW_SOFT:
        pytest.skip(f"the hard open-files limit ({hard}) leaves nothing to raise")

    def lower() -> None:  # in the child, before it runs the gateway
        resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_SOFT, hard))

    config = _config(tmp_path, "http://127.0.0.1:9/v1")  # never called
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        "--port", str(_free_port()), cwd=ROOT, stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, preexec_fn=lower,
    )
    assert proc.stderr is not None
    try:
        lines = await asyncio.wait_for(_wait_for_line(proc.stderr, b"gateway listening"), 30)
        soft = _soft_open_files(proc.pid)
    finally:
        proc.kill()
        await proc.wait()
    assert soft > LOW_SOFT and (soft == hard or hard == resource.RLIM_INFINITY)
    assert any(f"soft limit {soft} (was {LOW_SOFT}".encode() in line for line in lines)
