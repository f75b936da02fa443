"""The test suite never imports ``bench``: what tests share lives in ``tests/support``, which the
benchmarks may import (the benchmarks' own unit tests live in ``bench/tests``)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def bench_imports(source: str) -> list[int]:
    """The lines of ``source`` that import ``bench`` or a module under it, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "bench" or n.startswith("bench.") for n in names):
            found.append(node.lineno)
    return found


def test_the_check_sees_every_form_of_import() -> None:
    source = ("import bench\nimport os, bench.broker as b\nfrom bench import report\n"
              "from bench.worker_bench import drained\ndef f():\n    from bench import x\n"
              "import benchmark\nfrom tests.support import kafka\nfrom . import bench\n")
    assert bench_imports(source) == [1, 2, 3, 4, 6]


def test_no_module_under_tests_imports_bench() -> None:
    files = sorted(TESTS.rglob("*.py"))
    assert len(files) > 50, f"only {len(files)} files under {TESTS}: is this the test tree?"
    offenders = [f"{path.relative_to(TESTS.parent)}:{line}" for path in files
                 for line in bench_imports(path.read_text(encoding="utf-8"))]
    assert offenders == [], "tests must not import bench (move the helper into tests/support): " + \
        ", ".join(offenders)
