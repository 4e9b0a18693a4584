"""pyproject.toml: the package metadata builds without deprecation warnings (``make run``)."""

from __future__ import annotations

import re
import tomllib

from tests.conftest import ROOT


def test_the_license_is_an_spdx_string_and_the_build_needs_a_setuptools_that_reads_it() -> None:
    # A ``{text = ...}`` table makes setuptools 77 and later print a deprecation warning on every
    # install; the plain SPDX string is what they read, and older ones do not.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in project["build-system"]["requires"]
                     if r.startswith("setuptools")]
    match = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert match is not None and int(match.group(1)) >= 77
