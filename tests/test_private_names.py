"""Nothing in the SDK reads or assigns a private attribute of httpx or httpcore (issue 15):
the connection layer stands on their public seams (transports, network backends, request
extensions), so a new release of either cannot break it from the inside."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import httpcore
import httpx

SRC = Path(__file__).resolve().parent.parent / "src" / "incus_images"


def _private_names(*modules: object) -> set[str]:
    """The private attributes httpx and httpcore define on their public classes, and on the
    instances of those that can be made without arguments (``_pool`` of a transport)."""
    names: set[str] = set()
    for module in modules:
        for public in dir(module):
            value = getattr(module, public)
            if not isinstance(value, type):
                continue
            found = set(dir(value))
            # A class that needs arguments gives the names its class has.
            with contextlib.suppress(Exception):
                found |= set(vars(value()))
            names.update(name for name in found if name.startswith("_") and name[1:2] != "_")
    return names


PRIVATE = _private_names(httpx, httpcore)


def reaches_into(source: str, where: str = "") -> list[str]:
    """Where ``source`` touches a private attribute of httpx or httpcore: ``x._name`` on
    anything but ``self`` or ``cls`` with a name they keep private, or an import from a
    private module of theirs."""
    found = []
    for node in ast.walk(ast.parse(source)):
        own = isinstance(node, ast.Attribute) and (
            isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        )
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE and not own:
            found.append(f"{where}:{node.lineno}: .{node.attr}")
        module = (node.module or "").split(".") if isinstance(node, ast.ImportFrom) else []
        if module[:1] in (["httpx"], ["httpcore"]) and any(p.startswith("_") for p in module):
            found.append(f"{where}:{node.lineno}: from {'.'.join(module)}")
    return found


def test_the_check_finds_what_the_sdk_once_did() -> None:
    assert reaches_into("transport._pool = httpcore.AsyncConnectionPool()")
    assert reaches_into("from httpx._transports.default import map_httpcore_exceptions")
    assert not reaches_into("self._pool = pool")


def test_no_private_attribute_of_httpx_or_httpcore_is_touched() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        found += reaches_into(path.read_text(), str(path.relative_to(SRC)))
    assert found == []
