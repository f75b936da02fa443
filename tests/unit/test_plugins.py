"""agents.plugins (the worker's one extension point) and the test suite's fault plugin
(tests/support/faults.py) that the reliability tests load through it."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any, cast

import faust
import pytest

from agents.plugins import PLUGINS_ENV, install_plugins
from pipeline.clickhouse.store import AsyncStore, Store
from pipeline.core.errors import ConfigError, StoreError
from tests.support import faults

APP = cast(faust.App, object())
STORE = cast(AsyncStore, object())


def test_nothing_is_loaded_when_unset() -> None:
    assert install_plugins(APP, STORE, {}) == []
    assert install_plugins(APP, STORE, {PLUGINS_ENV: " , "}) == []


def test_each_named_module_installs_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, Any, Any]] = []
    for name in ("plug_a", "plug_b"):
        module = types.ModuleType(name)
        module.install = lambda app, store, n=name: calls.append((n, app, store))  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
    assert install_plugins(APP, STORE, {PLUGINS_ENV: "plug_a, plug_b"}) == ["plug_a", "plug_b"]
    assert calls == [("plug_a", APP, STORE), ("plug_b", APP, STORE)]


def test_a_module_that_is_not_there_or_not_a_plugin_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="BATCHSCOPE_PLUGINS: cannot import 'no_such_plugin_x'") as info:
        install_plugins(APP, STORE, {PLUGINS_ENV: "no_such_plugin_x"})
    assert "\n" not in str(info.value)
    monkeypatch.setitem(sys.modules, "not_a_plugin", types.ModuleType("not_a_plugin"))
    with pytest.raises(ConfigError, match=r"'not_a_plugin' has no install\(app, store\)"):
        install_plugins(APP, STORE, {PLUGINS_ENV: "not_a_plugin"})


def test_the_clickhouse_fault_fails_inserts_while_its_file_exists(tmp_path: Path) -> None:
    store = Store("http://127.0.0.1:1", "batchscope")  # never connects
    done: list[str] = []
    store.insert_json = lambda table, rows, token: done.append(token)  # type: ignore[method-assign]
    down = tmp_path / "down"
    faults.fail_inserts_while(store, down)
    store.insert_json("batch_snapshots", [b"{}"], "t1")
    down.touch()
    with pytest.raises(StoreError, match="fault injected") as info:
        store.insert_json("batch_snapshots", [b"{}"], "t2")
    assert info.value.retriable
    down.unlink()
    store.insert_json("batch_snapshots", [b"{}"], "t3")
    assert done == ["t1", "t3"]


def test_the_plugin_env_loads_the_fault_plugin_from_anywhere() -> None:
    env = faults.plugin_env(**{faults.FAULT_ENV: "raw:0:3"})
    assert env[PLUGINS_ENV] == "tests.support.faults"
    assert env["PYTHONPATH"].split(":")[0] == str(Path(__file__).resolve().parents[2])
    assert env[faults.FAULT_ENV] == "raw:0:3"
