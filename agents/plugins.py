"""The worker's one extension point: ``BATCHSCOPE_PLUGINS``, modules (comma-separated) whose
``install(app, store)`` runs once the Faust app is built and before it starts, in ``batchscope
worker`` and ``batchscope run`` alike. Unset, nothing is loaded. The test suite loads its fault
hooks this way (``tests/support/faults.py``); nothing in the product ships one.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping

import faust

from pipeline.clickhouse.store import AsyncStore
from pipeline.core.errors import ConfigError

log = logging.getLogger(__name__)

PLUGINS_ENV = "BATCHSCOPE_PLUGINS"


def install_plugins(app: faust.App, store: AsyncStore, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Install every module named in ``BATCHSCOPE_PLUGINS``; the names installed. A module that
    cannot be imported, or has no ``install``, is refused with one line."""
    names = [n.strip() for n in environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{PLUGINS_ENV}: cannot import {name!r}: {exc}") from None
        install = getattr(module, "install", None)
        if not callable(install):
            raise ConfigError(f"{PLUGINS_ENV}: {name!r} has no install(app, store) function")
        install(app, store)
        log.warning("plugin %s installed (%s)", name, PLUGINS_ENV)
    return names
