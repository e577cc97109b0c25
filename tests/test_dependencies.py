"""Every package the SDK imports is one it declares.

A package that only arrives as another's dependency (httpcore and certifi came with httpx) can
leave with that package's next release, or be held back to a version the SDK cannot use, and
nothing in pyproject.toml would say so. These tests read the SDK's imports from its source
(the generated _sync package included) and map each third-party module to the distribution
that installed it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "incus_images"

#: A requirement's name (PEP 508), before any extra, version or marker.
_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def _normal(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, str]:
    """Normalised name -> where pyproject.toml declares it: a dependency, or an extra's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    where = {}
    for requirement in project["dependencies"]:
        where[_normal(_match(requirement))] = "dependencies"
    for extra, requirements in project.get("optional-dependencies", {}).items():
        for requirement in requirements:
            where.setdefault(_normal(_match(requirement)), f"the extra {extra!r}")
    return where


def _match(requirement: str) -> str:
    found = _NAME.match(requirement)
    assert found, f"pyproject.toml: cannot read the requirement {requirement!r}"
    return found.group(1)


def third_party_imports(package: Path) -> dict[str, list[str]]:
    """Top-level module -> the SDK files that import it, for every module that is neither the
    standard library's nor the SDK's own."""
    imported: dict[str, list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top == package.name:
                    continue
                where = str(path.relative_to(package.parent))
                imported.setdefault(top, []).append(where)
    return imported


def test_the_walk_sees_the_generated_code_and_the_imports_it_must() -> None:
    """Guards the test itself: the blocking twin is read too, and a module imported in a
    function body (the lazy imports) is found."""
    assert list((PACKAGE / "_sync").glob("*.py")), "the generated _sync package is missing"
    imported = third_party_imports(PACKAGE)
    assert any("_sync" in where for where in imported["httpx"])
    assert "certifi" in imported  # imported inside _ssl_context() only
    assert "tqdm" in imported  # the progress extra


def test_every_third_party_module_the_sdk_imports_is_declared() -> None:
    distributions = packages_distributions()
    wanted = declared()
    problems = []
    for module, files in sorted(third_party_imports(PACKAGE).items()):
        providers = distributions.get(module)
        if not providers:
            problems.append(
                f"{module} (imported by {files[0]}) is not installed: which distribution "
                "provides it, and is it declared in pyproject.toml?"
            )
        elif not any(_normal(name) in wanted for name in providers):
            problems.append(
                f"{module} (imported by {', '.join(sorted(set(files))[:3])}) comes from "
                f"{' or '.join(providers)}, which pyproject.toml does not declare: add it to "
                "[project] dependencies (or an extra) with the lowest version that works"
            )
    assert not problems, "\n".join(problems)
