"""Today's code against a baseline git ref, in the same run: the code trees a benchmark drives.

A benchmark compares the working tree (:data:`CURRENT`) with the code of ``--baseline-ref``
(default :data:`DEFAULT_REF`, main before issue 13), materialised by :func:`materialise` as a
detached ``git worktree`` under a temporary directory and removed afterwards. Both run from the
same virtualenv: a tree's processes get ``PYTHONPATH=<tree>`` and the tree as their working
directory (:meth:`Tree.env`), so ``python -m agents.worker`` or ``-m batchscope.cli`` imports
``pipeline`` and ``agents`` from that tree and not from the editable install. :func:`materialise`
checks that it does before a benchmark relies on it. The dependencies are the current ones for
both: a baseline that needs other package versions is not comparable this way.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REF = "2e98819"  # main just before issue 13 (records of many observations)
PROBE = "import agents, pipeline; print(pipeline.__file__); print(agents.__file__)"


@dataclass(frozen=True, slots=True)
class Tree:
    """A checkout of the code: its label in reports, its path and its commit."""

    label: str
    path: Path
    commit: str

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        return tree_env(self.path, os.environ if base is None else base)

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def cli(self) -> str:
        """The module of the tree's ``batchscope`` command (``pipeline.cli`` before the layout by
        stage)."""
        return "batchscope.cli" if (self.path / "batchscope" / "cli.py").exists() else "pipeline.cli"


def tree_env(path: Path, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``PYTHONPATH`` set to ``path`` alone: its packages shadow the installed ones,
    and no other entry (say, a ``PYTHONPATH=.`` of the caller's) can bring the current tree back."""
    return {**base, "PYTHONPATH": str(path)}


def git(*args: str, repo: Path = ROOT) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def current(repo: Path = ROOT) -> Tree:
    """The working tree, as it is (uncommitted changes included: the label says so)."""
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", repo=repo))
    label = "current" + (" (uncommitted changes)" if dirty else "")
    return Tree(label, repo, git("rev-parse", "HEAD", repo=repo))


def resolve(ref: str, repo: Path = ROOT) -> str:
    return git("rev-parse", "--verify", f"{ref}^{{commit}}", repo=repo)


@contextmanager
def materialise(ref: str = DEFAULT_REF, repo: Path = ROOT) -> Iterator[Tree]:
    """The code of ``ref`` as a detached worktree in a temporary directory, removed on exit."""
    commit = resolve(ref, repo)
    with tempfile.TemporaryDirectory(prefix="batchscope-baseline-") as tmp:
        path = Path(tmp) / "tree"
        git("worktree", "add", "--detach", "--quiet", str(path), commit, repo=repo)
        try:
            tree = Tree(f"baseline {ref}", path, commit)
            check_imports(tree)
            yield tree
        finally:
            git("worktree", "remove", "--force", str(path), repo=repo)
            git("worktree", "prune", repo=repo)


def check_imports(tree: Tree) -> None:
    """Exit with one line unless a process of ``tree`` imports its own ``pipeline`` and ``agents``."""
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=tree.path, env=tree.env(), capture_output=True,
                          text=True, check=False)
    files = [Path(line).resolve() for line in done.stdout.split()]
    if done.returncode != 0 or not files or not all(f.is_relative_to(tree.path.resolve()) for f in files):
        raise SystemExit(f"{tree.label}: its processes do not import its own code "
                         f"({done.stderr.strip()[-300:] or ', '.join(map(str, files))})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline-ref", default=DEFAULT_REF, dest="baseline_ref",
                        help=f"git ref run as the same-run baseline (default {DEFAULT_REF}: main before "
                             "issue 13)")
