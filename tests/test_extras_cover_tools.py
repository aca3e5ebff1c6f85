"""Each tool's extra installs every package the tool's own code imports: a ``pip install
'chain-of-zoom[train]'`` user must not meet ``pip install 'chain-of-zoom[eval]'`` halfway through a
training run (train_grpo draws rewards.png with matplotlib; train_sr's kernels use scipy)."""

from __future__ import annotations

import ast
import functools
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, packages_distributions, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from coz.run.extras import DISTRIBUTION, TOOL_EXTRA

REPO = Path(__file__).resolve().parent.parent
# Opt-in extras of their own, named in the tool's one-line message when missing (coz/run/extras.py).
OPT_IN = {"wandb"}
# metadata reads are the cost here: once per session
distributions_of = functools.cache(packages_distributions)
requirements_of = functools.cache(requires)


def imported_packages(folder: Path) -> set[str]:
    """Top-level names of the third-party packages imported anywhere in ``folder`` (function bodies too)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "coz"}


def installed_by(extra: str) -> set[str]:
    """Canonical names of the distributions ``pip install chain-of-zoom[extra]`` brings (transitively)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    todo += [Requirement(r) for r in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == canonicalize_name(DISTRIBUTION):  # chain-of-zoom[models,wandb]
            todo += [Requirement(r) for x in req.extras for r in project["optional-dependencies"][x]]
            continue
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in requirements_of(req.name) or ()]
        except PackageNotFoundError:
            pass  # not installed here: its own dependencies are unknown, it is listed itself
    return seen


def test_each_tools_extra_installs_what_the_tool_imports():
    dists = distributions_of()
    for tool, extra in sorted(TOOL_EXTRA.items()):
        installed = installed_by(extra)
        missing = {
            package
            for package in imported_packages(REPO / "coz" / tool) - OPT_IN
            if not {canonicalize_name(d) for d in dists.get(package, [package])} & installed
        }
        assert not missing, f"[{extra}] lacks {sorted(missing)}, imported by coz/{tool}"
