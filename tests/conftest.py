"""Options and fixtures shared by the whole suite (the fixtures live in ``tests/support``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.support.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reliability-long", action="store_true", default=False,
                     help="reliability suite: run the long variants and the soak (see docs/reliability.md)")
    parser.addoption("--soak-minutes", type=float, default=30.0,
                     help="soak duration in minutes (with --reliability-long; default 30)")
    parser.addoption("--soak-report", default="soak-report.json",
                     help="where the soak writes its figures (default ./soak-report.json)")
