"""Generate the blocking twin of the hand-written async code.

    python scripts/run_unasync.py           # (re)generate src/incus_images/_sync and tests/_sync
    python scripts/run_unasync.py --check   # exit 1 when the generated code is missing or stale

The async sources under ``_async/`` are the only ones anybody edits. This script turns each into
its blocking twin with unasync, writes the result into a temporary directory and then replaces
the ``_sync/`` directory whole, so a module deleted from ``_async/`` never survives in ``_sync/``.
Line numbers stay those of the async source (nothing is reformatted and no banner is added), so
a traceback through generated code points at the line to edit.

Renaming can leave an import that lint would refuse: ``AsyncIterator, Iterator`` becomes
``Iterator, Iterator``, ``AsyncClient, ChecksumMismatchError`` becomes ``Client,
ChecksumMismatchError``. Each ``from ... import`` that renaming changed gets its names
deduplicated and put back in the order ruff's isort rule wants, in the same lines, so the shipped
code passes the same lint as the source. This needs only the standard library: the build hook runs
it where ruff is not installed.

The build hook (hatch_build.py) and the test suite's conftest call ``generate()``.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import re
import shutil
import sys
import tempfile
import tokenize
from collections import Counter
from pathlib import Path

import unasync

ROOT = Path(__file__).resolve().parent.parent

#: (async source, generated twin), relative to the project root.
TREES = [
    ("src/incus_images/_async", "src/incus_images/_sync"),
    ("tests/_async", "tests/_sync"),
]

#: The one rename table. unasync already maps __aenter__, __aexit__, __aiter__, __anext__,
#: AsyncIterator, AsyncIterable, AsyncGenerator, asynccontextmanager and StopAsyncIteration.
#: Every entry must be used somewhere, or generation fails: a stale entry hides a rename that
#: no longer happens.
RENAMES = {
    # Our public classes and their sync names.
    "AsyncClient": "Client",  # also httpx.AsyncClient -> httpx.Client, which is what we want
    "AsyncImagesAPI": "ImagesAPI",
    "AsyncOperationsAPI": "OperationsAPI",
    "AsyncConnection": "Connection",
    # The event stream: the public iterator and the websocket under it.
    "AsyncEventStream": "EventStream",
    "AsyncEventSocket": "EventSocket",
    # Internal rooms of the images API.
    "AsyncImageCalls": "ImageCalls",
    "AsyncImporter": "Importer",
    "AsyncCopier": "Copier",
    "AsyncEnsurer": "Ensurer",
    "AsyncPublisher": "Publisher",
    # What a call returned early (wait=False) still does once its operation ends.
    "AsyncCompletion": "Completion",
    # What copy() takes as its source.
    "AsyncImageServer": "ImageServer",
    # A simplestreams image server, read (browsed and downloaded from).
    "AsyncSimpleStreams": "SimpleStreams",
    "AsyncSimpleStreamsImages": "SimpleStreamsImages",
    # httpx's async spellings. (unasync's default would turn AsyncX into SyncX, a name httpx
    # does not have.)
    "AsyncBaseTransport": "BaseTransport",
    "handle_async_request": "handle_request",
    # The SDK's transports.
    "AsyncPolicyTransport": "PolicyTransport",
    "AsyncPoolTransport": "PoolTransport",
    # httpcore's, for the deadline-keeping network backend.
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncNetworkBackend": "NetworkBackend",
    "AsyncNetworkStream": "NetworkStream",
    "AsyncSocketBackend": "SocketBackend",
    "AsyncDeadlineBackend": "DeadlineBackend",
    "AsyncDeadlineStream": "DeadlineStream",
    "aclose": "close",
    "AsyncExitStack": "ExitStack",
    "enter_async_context": "enter_context",
    "aiter_raw": "iter_raw",
    "anext": "next",
    # The few flavour-specific behaviours live in src/incus_images/_flavours.py.
    "async_flavour": "sync_flavour",
    # Tests: the flavour's own modules (incus_images._async... -> incus_images._sync...).
    "_async": "_sync",
    "async_https_client": "https_client",
}

#: Names that may appear in generated code although they look asynchronous.
ALLOWED_ASYNC_NAMES: frozenset[str] = frozenset(
    {
        "SyncBackend",  # httpcore's blocking backend
        "SyncByteStream",  # httpx's blocking byte stream
    }
)

#: Names that must not survive into generated code: the keywords, every Async... class, the
#: Sync... names unasync invents for AsyncX it does not know, and httpx's async spellings.
_ASYNC_ONLY = re.compile(
    r"await|async|Async[A-Z]\w*|Sync[A-Z]\w*|async_\w+|asynccontextmanager"
    r"|a(close|read|iter_\w+|send|write|flush|next|iter)"
)


class _CountingRule(unasync.Rule):  # type: ignore[misc]
    """An unasync rule that records which table entries it applied."""

    def __init__(self, fromdir: str, todir: str, used: Counter[str]) -> None:
        super().__init__(fromdir, todir, additional_replacements=RENAMES)
        self._used = used

    def _unasync_name(self, name: str) -> str:
        if name in RENAMES:
            self._used[name] += 1
        return str(super()._unasync_name(name))


class GenerationError(RuntimeError):
    """The generated code would be wrong; the message says where and why."""


def _generate_into(out_root: Path) -> None:
    """Write every generated tree below out_root, mirroring the project layout."""
    used: Counter[str] = Counter()
    problems: list[str] = []
    for source_rel, target_rel in TREES:
        source = ROOT / source_rel
        staging = out_root / target_rel
        staging.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.rglob("*.py")):
            relative = path.relative_to(source)
            rule = _CountingRule(str(source), str(staging), used)
            # unasync writes to fromdir -> todir by string replacement of the file path.
            rule._unasync_file(str(path))
            generated = staging / relative
            shown = f"{target_rel}/{relative}"
            try:
                _tidy_renamed_imports(path, generated, shown)
                _tidy_renamed_unions(path, generated, shown)
            except GenerationError as exc:
                problems.append(str(exc))
            problems.extend(_leftovers(generated, shown))
    unused = sorted(set(RENAMES) - set(used))
    if unused:
        problems.append(f"rename table entries never used (remove them): {', '.join(unused)}")
    if problems:
        raise GenerationError("unasync generation failed:\n  " + "\n  ".join(problems))


def _tidy_renamed_imports(source: Path, generated: Path, shown: str) -> None:
    """Deduplicate and re-sort the names of every ``from ... import`` that renaming changed,
    keeping each statement on the lines it had (see the module docstring)."""
    before = source.read_text().splitlines(keepends=True)
    lines = generated.read_text().splitlines(keepends=True)
    changed = False
    for node in ast.walk(ast.parse("".join(lines), str(generated))):
        if not isinstance(node, ast.ImportFrom) or node.end_lineno is None:
            continue
        first, last = node.lineno - 1, node.end_lineno
        if lines[first:last] == before[first:last]:
            continue  # untouched by renaming: as ruff already accepted it in the source
        members = [(alias.name, alias.asname) for alias in node.names]
        tidy = sorted(dict.fromkeys(members), key=_isort_member_order)
        if tidy == members:
            continue
        lines[first:last] = _import_lines(lines[first:last], node, tidy, f"{shown}:{node.lineno}")
        changed = True
    if changed:
        generated.write_text("".join(lines))


def _tidy_renamed_unions(source: Path, generated: Path, shown: str) -> None:
    """Name each member of a ``X | Y`` union once where renaming made two the same
    (``Iterable[bytes] | AsyncIterable[bytes]`` becomes ``Iterable[bytes]``, not
    ``Iterable[bytes] | Iterable[bytes]``, which the API reference would show), on the lines
    the union had."""
    before = source.read_text().splitlines(keepends=True)
    lines = generated.read_text().splitlines(keepends=True)
    changed = False
    while (edit := _first_repeated_union(lines, before, shown)) is not None:
        row, start, end, text = edit
        encoded = lines[row].encode()
        lines[row] = (encoded[:start] + text.encode() + encoded[end:]).decode()
        changed = True
    if changed:
        generated.write_text("".join(lines))


def _first_repeated_union(
    lines: list[str], before: list[str], shown: str
) -> tuple[int, int, int, str] | None:
    """The first union on a renamed line that names a member twice, as (line index, start and
    end byte offsets, the union written with each member once)."""
    tree = ast.parse("".join(lines), shown)
    inner = {
        id(child)
        for node in ast.walk(tree)
        if _is_union(node)
        for child in (node.left, node.right)  # type: ignore[attr-defined]
        if _is_union(child)
    }
    for node in ast.walk(tree):
        if not _is_union(node) or id(node) in inner:
            continue
        assert isinstance(node, ast.BinOp)
        assert node.end_lineno is not None
        row = node.lineno - 1
        if lines[row : node.end_lineno] == before[row : node.end_lineno]:
            continue  # untouched by renaming: as ruff already accepted it in the source
        members = [ast.unparse(member) for member in _union_members(node)]
        unique = list(dict.fromkeys(members))
        if unique == members:
            continue
        if node.end_lineno != node.lineno or node.end_col_offset is None:
            raise GenerationError(
                f"{shown}:{node.lineno}: renaming made a union over several lines name a "
                "member twice; write it on one line (or as an alias) in the async source"
            )
        return row, node.col_offset, node.end_col_offset, " | ".join(unique)
    return None


def _is_union(node: ast.AST) -> bool:
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)


def _union_members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union_members(node.left) + _union_members(node.right)
    return [node]


def _isort_member_order(member: tuple[str, str | None]) -> tuple[object, ...]:
    """The order of ruff's isort rule (I001) with its defaults (order-by-type, not case
    sensitive): CONSTANTS, then Classes, then other names; digits compared as numbers."""
    name, asname = member
    if len(name) > 1 and name.isupper():
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return (
        kind,
        _natural(name.lower()),
        _natural(name),
        asname is not None,
        _natural(asname or ""),
    )


def _natural(text: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _import_lines(
    old: list[str], node: ast.ImportFrom, members: list[tuple[str, str | None]], where: str
) -> list[str]:
    """The statement written again with ``members``, on as many lines as before: one line, or
    one member a line between parentheses (the two shapes ruff gives an import)."""
    names = [name if asname is None else f"{name} as {asname}" for name, asname in members]
    indent = old[0][: node.col_offset]
    head = f"{indent}from {'.' * node.level}{node.module or ''} import "
    # A comment or a continuation on the statement's lines would be lost in rewriting.
    plain = not any("#" in line or "\\" in line for line in old)
    if plain and len(old) == 1 and old[0].startswith(head) and "(" not in old[0]:
        return [head + ", ".join(names) + "\n"]
    one_a_line = (
        plain
        and len(old) == len(node.names) + 2
        and old[0].rstrip() == head + "("
        and old[-1].strip() == ")"
    )
    if one_a_line and len(members) == len(node.names):
        inner = old[1][: len(old[1]) - len(old[1].lstrip())]
        return [old[0], *(f"{inner}{name},\n" for name in names), old[-1]]
    raise GenerationError(
        f"{where}: renaming made this import need tidying that would move lines ("
        f"{''.join(old).strip()!r}); write it in the async source so that its twin keeps "
        "its lines (one line, or one name a line without names that rename to the same)"
    )


def _leftovers(path: Path, shown: str) -> list[str]:
    """Asynchronous names left in generated code. Only code counts: names are read as Python
    tokens, so comments and strings (docstrings too) may mention async freely."""
    found = []
    with tokenize.open(path) as source:
        for token in tokenize.generate_tokens(source.readline):
            if token.type != tokenize.NAME or token.string in ALLOWED_ASYNC_NAMES:
                continue
            if _ASYNC_ONLY.fullmatch(token.string):
                found.append(
                    f"{shown}:{token.start[0]}: {token.string!r} survived; give it a sync "
                    f"twin in RENAMES: {token.line.strip()}"
                )
    return found


def _same_tree(a: Path, b: Path) -> bool:
    if not a.is_dir() or not b.is_dir():
        return False
    files_a = {p.relative_to(a) for p in a.rglob("*.py")}
    files_b = {p.relative_to(b) for p in b.rglob("*.py")}
    if files_a != files_b:
        return False
    return all(filecmp.cmp(a / rel, b / rel, shallow=False) for rel in files_a)


def generate(check: bool = False) -> list[str]:
    """Generate the sync twins; with check=True only compare. Return the stale tree names."""
    stale = []
    with tempfile.TemporaryDirectory(prefix="unasync-") as tmp:
        out_root = Path(tmp)
        _generate_into(out_root)
        for _, target_rel in TREES:
            fresh, current = out_root / target_rel, ROOT / target_rel
            if _same_tree(fresh, current):
                continue
            stale.append(target_rel)
            if check:
                continue
            # Replace the whole directory so files removed from _async/ disappear here too.
            # Stage beside the target (same filesystem), then swap.
            staged = current.with_name(current.name + ".new")
            shutil.rmtree(staged, ignore_errors=True)
            shutil.copytree(fresh, staged)
            shutil.rmtree(current, ignore_errors=True)
            staged.rename(current)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 when the generated code is missing or out of date",
    )
    args = parser.parse_args(argv)
    try:
        stale = generate(check=args.check)
    except GenerationError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        if stale:
            print(
                f"stale generated code: {', '.join(stale)}; run: python scripts/run_unasync.py",
                file=sys.stderr,
            )
            return 1
        print("generated code is up to date")
        return 0
    print(f"regenerated: {', '.join(stale)}" if stale else "generated code was already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
