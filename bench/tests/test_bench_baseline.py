"""bench.baseline: the baseline tree is its own code, run from the same virtualenv, and leaves no
worktree behind; bench.track_bench's page file is what bench/pagepub.py reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from bench import baseline
from bench.track_bench import page_lines
from tests.support.workload import pages


def test_tree_env_sets_pythonpath_to_the_tree_alone() -> None:
    env = baseline.tree_env(Path("/x/tree"), {"PYTHONPATH": "/work/other", "HOME": "/root"})
    assert env == {"PYTHONPATH": "/x/tree", "HOME": "/root"}


def worktrees() -> str:
    return subprocess.run(["git", "-C", str(baseline.ROOT), "worktree", "list", "--porcelain"],
                          capture_output=True, text=True, check=True).stdout


def test_materialise_checks_out_the_ref_imports_from_it_and_removes_it() -> None:
    head = baseline.resolve("HEAD~1")
    with baseline.materialise("HEAD~1") as tree:
        assert tree.commit == head
        assert (tree.path / "pipeline" / "kafka.py").is_file()
        assert str(tree.path) in worktrees()
        probe = subprocess.run([sys.executable, "-c", baseline.PROBE], cwd=tree.path, env=tree.env(),
                               capture_output=True, text=True, check=True)
        assert all(Path(p).resolve().is_relative_to(tree.path.resolve()) for p in probe.stdout.split())
        path = tree.path
    assert not path.exists()
    assert str(path) not in worktrees()


def test_an_unknown_ref_is_one_line() -> None:
    with pytest.raises(SystemExit, match="rev-parse") as info, baseline.materialise("no-such-ref-xyz"):
        pass
    assert "\n" not in str(info.value)


def test_page_lines_carry_each_page_whole() -> None:
    observed = pages(40, sources=2, page=10)[:5]
    lines = page_lines(observed).splitlines()
    assert len(lines) == len(observed)
    for line, page in zip(lines, observed, strict=True):
        back = orjson.loads(line)
        assert (back["source"], back["provider"], back["observed_at"]) == (
            page[0].source, page[0].provider, page[0].observed_at)
        assert back["payloads"] == [e.payload for e in page]
