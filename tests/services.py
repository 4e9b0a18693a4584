"""What a test does when a program it needs (redis-server, PostgreSQL, Chromium) is missing.

``make test`` installs them (deploy/install_services.sh, deploy/install_browser.sh) and runs
pytest with ``GATEWAY_TEST_SERVICES=required``; CI runs ``make test`` with ``CI=true``. There a
missing program is a failure, never a silent skip; elsewhere (a bare ``pytest`` on a laptop)
the test is skipped with the line that installs it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRED_VAR = "GATEWAY_TEST_SERVICES"


def required() -> bool:
    """True under ``make test`` or CI, where every service the tests need was installed."""
    return (os.environ.get(REQUIRED_VAR) == "required"
            or os.environ.get("CI", "").lower() in ("1", "true", "yes"))


def missing(reason: str) -> NoReturn:
    """Fail where the program should have been installed, else skip saying how to get it."""
    if required():
        pytest.fail(f"{reason} (make test installs it; {REQUIRED_VAR} or CI requires it)")
    pytest.skip(reason)
