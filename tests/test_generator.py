"""Unit tests of the unasync generator (scripts/run_unasync.py).

The real trees are only generated and read. Every test that feeds the generator its own source
points ROOT and TREES at a tree under tmp_path, so nothing is left in the repository.
"""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from pathlib import Path

import pytest
import run_unasync  # scripts/ is on the pytest pythonpath
from run_unasync import GenerationError, generate

REAL_TREES = list(run_unasync.TREES)
REAL_ROOT = run_unasync.ROOT


def generated_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for source_rel, target_rel in REAL_TREES:
        source, target = REAL_ROOT / source_rel, REAL_ROOT / target_rel
        for path in sorted(source.rglob("*.py")):
            pairs.append((path, target / path.relative_to(source)))
    return pairs


@pytest.fixture(scope="module")
def fresh_generation() -> None:
    """Bring the real _sync trees up to date (as conftest and the build hook do)."""
    generate()


# --------------------------------------------------------------------------------------------
# The real trees


def test_the_trees_are_the_package_and_the_tests() -> None:
    assert ("src/incus_images/_async", "src/incus_images/_sync") in REAL_TREES
    assert ("tests/_async", "tests/_sync") in REAL_TREES
    assert Path(__file__).resolve().parent.parent == REAL_ROOT


def test_nothing_is_stale_after_generation(fresh_generation: None) -> None:
    assert generate(check=True) == []


def test_every_async_module_has_a_twin_and_nothing_else(fresh_generation: None) -> None:
    for source_rel, target_rel in REAL_TREES:
        source, target = REAL_ROOT / source_rel, REAL_ROOT / target_rel
        sources = {p.relative_to(source) for p in source.rglob("*.py")}
        twins = {p.relative_to(target) for p in target.rglob("*.py")}
        assert sources
        assert twins == sources, target_rel


def test_generated_code_has_no_async_left(fresh_generation: None) -> None:
    pairs = generated_pairs()
    assert len(pairs) >= 8
    for _, twin in pairs:
        text = twin.read_text(encoding="utf-8")
        names = [
            token.string
            for token in tokenize.generate_tokens(io.StringIO(text).readline)
            if token.type == tokenize.NAME
        ]
        assert "await" not in names, twin
        assert "async" not in names, twin
        assert [name for name in names if name.startswith("Async")] == [], twin
        assert [name for name in names if name.startswith("aiter") or name == "aclose"] == []
        tree = ast.parse(text, filename=str(twin))
        for node in ast.walk(tree):
            assert not isinstance(
                node, ast.AsyncFunctionDef | ast.Await | ast.AsyncWith | ast.AsyncFor
            ), (twin, node.lineno)


def test_the_async_sources_really_are_async() -> None:
    # Otherwise the test above proves nothing.
    sources = "".join(source.read_text() for source, _ in generated_pairs())
    assert "async def" in sources
    assert "await " in sources
    assert "AsyncClient" in sources


def test_generated_files_keep_the_line_numbers_of_their_source(fresh_generation: None) -> None:
    for source, twin in generated_pairs():
        source_lines = source.read_text(encoding="utf-8").splitlines()
        twin_lines = twin.read_text(encoding="utf-8").splitlines()
        assert len(twin_lines) == len(source_lines), twin
        # Each definition stays on its line, at its indentation.
        for number, line in enumerate(source_lines):
            stripped = line.lstrip()
            if stripped.startswith(("def ", "async def ", "class ")):
                indent = line[: len(line) - len(stripped)]
                kind = "class " if stripped.startswith("class ") else "def "
                assert twin_lines[number].startswith(indent + kind), (twin, number + 1)


def test_the_public_sync_names_exist(fresh_generation: None) -> None:
    client = (REAL_ROOT / "src/incus_images/_sync/client.py").read_text()
    assert "class Client" in client
    images = (REAL_ROOT / "src/incus_images/_sync/images.py").read_text()
    assert "class ImagesAPI" in images


def test_an_unused_rename_entry_fails_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(run_unasync.RENAMES, "AsyncNeverWrittenAnywhere", "NeverWritten")
    with pytest.raises(GenerationError, match="never used") as info:
        generate(check=True)
    assert "AsyncNeverWrittenAnywhere" in str(info.value)
    # The entries that are used are not blamed.
    assert "AsyncImagesAPI" not in str(info.value)


def test_every_async_class_rename_is_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dropping an AsyncX entry must break generation: unasync would invent SyncX instead.
    # All are dropped at once (one generation, not one per name) and each must be blamed.
    names = [name for name in run_unasync.RENAMES if name.startswith("Async")]
    assert len(names) >= 5
    reduced = {key: value for key, value in run_unasync.RENAMES.items() if key not in names}
    monkeypatch.setattr(run_unasync, "RENAMES", reduced)
    with pytest.raises(GenerationError) as info:
        generate(check=True)
    unblamed = [name for name in names if f"'Sync{name[5:]}' survived" not in str(info.value)]
    assert unblamed == []


# --------------------------------------------------------------------------------------------
# A tree of our own


@pytest.fixture
def own_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ROOT and TREES pointed at tmp_path/pkg/_async -> tmp_path/pkg/_sync."""
    monkeypatch.setattr(run_unasync, "ROOT", tmp_path)
    monkeypatch.setattr(run_unasync, "TREES", [("pkg/_async", "pkg/_sync")])
    monkeypatch.setattr(run_unasync, "RENAMES", {"AsyncThing": "Thing", "aclose": "close"})
    source = tmp_path / "pkg" / "_async"
    source.mkdir(parents=True)
    return source


GOOD_SOURCE = textwrap.dedent(
    '''\
    """A module; its comments may say anything."""


    class AsyncThing:  # an async comment: async def is fine here
        async def run(self, other: AsyncThing) -> None:
            await other.aclose()
            async with other as value:
                await value.aclose()

        async def aclose(self) -> None:
            return None
    '''
)


def test_own_tree_generates_and_checks(own_tree: Path, tmp_path: Path) -> None:
    (own_tree / "mod.py").write_text(GOOD_SOURCE)
    (own_tree / "sub").mkdir()
    (own_tree / "sub" / "more.py").write_text("x: AsyncThing | None = None\n")
    assert generate(check=True) == ["pkg/_sync"]  # missing: stale, but not written
    assert not (tmp_path / "pkg" / "_sync").exists()

    assert generate() == ["pkg/_sync"]
    twin = (tmp_path / "pkg" / "_sync" / "mod.py").read_text()
    assert "class Thing:" in twin
    assert "def run(self, other: Thing) -> None:" in twin
    assert "other.close()" in twin
    assert "with other as value:" in twin
    assert "await" not in twin.split('"""')[2].split("#")[0]
    assert len(twin.splitlines()) == len(GOOD_SOURCE.splitlines())
    more = tmp_path / "pkg" / "_sync" / "sub" / "more.py"
    assert more.read_text() == "x: Thing | None = None\n"
    assert generate(check=True) == []
    assert generate() == []
    # Nothing but the two trees was created.
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["_async", "_sync"]


def test_a_module_removed_from_async_disappears_from_sync(own_tree: Path, tmp_path: Path) -> None:
    (own_tree / "mod.py").write_text(GOOD_SOURCE)
    (own_tree / "gone.py").write_text("y = 1\n")
    generate()
    assert (tmp_path / "pkg" / "_sync" / "gone.py").exists()
    (own_tree / "gone.py").unlink()
    assert generate(check=True) == ["pkg/_sync"]
    assert generate() == ["pkg/_sync"]
    assert not (tmp_path / "pkg" / "_sync" / "gone.py").exists()
    assert (tmp_path / "pkg" / "_sync" / "mod.py").exists()


def test_a_hand_edit_of_the_twin_is_stale(own_tree: Path, tmp_path: Path) -> None:
    (own_tree / "mod.py").write_text(GOOD_SOURCE)
    generate()
    twin = tmp_path / "pkg" / "_sync" / "mod.py"
    twin.write_text(twin.read_text() + "# edited by hand\n")
    assert generate(check=True) == ["pkg/_sync"]
    assert twin.read_text().endswith("# edited by hand\n")  # check=True does not write
    assert run_unasync.main(["--check"]) == 1
    assert run_unasync.main([]) == 0
    assert run_unasync.main(["--check"]) == 0
    assert not twin.read_text().endswith("# edited by hand\n")


def test_a_name_the_table_cannot_rename_fails(own_tree: Path, tmp_path: Path) -> None:
    (own_tree / "mod.py").write_text(GOOD_SOURCE + "\n\nclass AsyncWidget:\n    pass\n")
    with pytest.raises(GenerationError) as info:
        generate(check=True)
    message = str(info.value)
    line = len(GOOD_SOURCE.splitlines()) + 3
    assert f"pkg/_sync/mod.py:{line}: 'SyncWidget' survived" in message
    assert "class SyncWidget:" in message
    assert not (tmp_path / "pkg" / "_sync").exists()
    with pytest.raises(GenerationError):
        generate()
    assert not (tmp_path / "pkg" / "_sync").exists()
    assert run_unasync.main(["--check"]) == 2


def test_strings_and_comments_may_mention_async_freely(own_tree: Path) -> None:
    # Only code tokens are checked: prose in docstrings, strings and comments is not code.
    (own_tree / "mod.py").write_text(
        GOOD_SOURCE + 'label = "made by AsyncWidget; await it"  # async with AsyncWidget\n'
    )
    assert generate(check=True) == ["pkg/_sync"]


def test_an_httpx_async_method_missing_from_the_table_fails(own_tree: Path) -> None:
    # Not renamed, client.aiter_lines() would call a method httpx.Client does not have.
    (own_tree / "mod.py").write_text(GOOD_SOURCE + "lines = client.aiter_lines()\n")
    with pytest.raises(GenerationError, match="'aiter_lines' survived"):
        generate(check=True)


def test_a_hash_in_a_string_does_not_hide_leftovers(own_tree: Path) -> None:
    (own_tree / "mod.py").write_text(GOOD_SOURCE + 'pair = ("#", AsyncWidget)\n')
    with pytest.raises(GenerationError):
        generate(check=True)


TIDY_SOURCE = textwrap.dedent(
    """\
    from collections.abc import AsyncIterator, Callable, Iterator
    from pkg.names import (
        AsyncThing,
        Bolt,
        thing_maker,
    )
    from pkg.left import zeta, Alpha


    async def make(maker: Callable[[], AsyncThing]) -> AsyncIterator[Bolt]:
        await maker().aclose()
        raise NotImplementedError(thing_maker, zeta, Alpha, Iterator)
    """
)


def test_imports_that_renaming_changed_are_deduplicated_and_sorted_in_place(
    own_tree: Path, tmp_path: Path
) -> None:
    (own_tree / "mod.py").write_text(TIDY_SOURCE)
    generate()
    twin = (tmp_path / "pkg" / "_sync" / "mod.py").read_text().splitlines()
    assert twin[0] == "from collections.abc import Callable, Iterator"
    assert twin[1:6] == [
        "from pkg.names import (",
        "    Bolt,",
        "    Thing,",
        "    thing_maker,",
        ")",
    ]
    # An import renaming did not touch is left as its author (and ruff, on the source) had it.
    assert twin[6] == "from pkg.left import zeta, Alpha"
    assert len(twin) == len(TIDY_SOURCE.splitlines())
    assert "def make(maker: Callable[[], Thing]) -> Iterator[Bolt]:" in twin
    assert "    maker().close()" in twin


def test_an_import_whose_tidying_would_move_lines_fails(own_tree: Path) -> None:
    (own_tree / "mod.py").write_text(
        "from collections.abc import (\n    AsyncIterator,\n    Iterator,\n)\n"
        "thing: AsyncThing | None = None\n"
        "close = AsyncThing.aclose\n"
    )
    with pytest.raises(GenerationError, match=r"pkg/_sync/mod.py:1: renaming made this import"):
        generate(check=True)


UNION_SOURCE = textwrap.dedent(
    """\
    from collections.abc import AsyncIterable, Iterable

    Data = bytes | Iterable[bytes] | AsyncIterable[bytes]
    Pair = tuple[AsyncThing | Thing, int]
    Same = int | int


    async def take(data: Iterable[bytes] | AsyncIterable[bytes] | None = None) -> None:
        await AsyncThing().aclose()
    """
)


def test_unions_that_renaming_made_repeat_a_member_name_it_once(
    own_tree: Path, tmp_path: Path
) -> None:
    (own_tree / "mod.py").write_text(UNION_SOURCE)
    generate()
    twin = (tmp_path / "pkg" / "_sync" / "mod.py").read_text().splitlines()
    assert twin[2] == "Data = bytes | Iterable[bytes]"
    assert twin[3] == "Pair = tuple[Thing, int]"
    # A line renaming did not touch is left as its author (and ruff, on the source) had it.
    assert twin[4] == "Same = int | int"
    assert twin[7] == "def take(data: Iterable[bytes] | None = None) -> None:"
    assert twin[0] == "from collections.abc import Iterable"
    assert len(twin) == len(UNION_SOURCE.splitlines())


def test_a_repeating_union_over_several_lines_fails(own_tree: Path) -> None:
    source = "Data = (\n    AsyncThing\n    | Thing\n)\nAsyncThing.aclose\n"
    (own_tree / "mod.py").write_text(source)
    with pytest.raises(GenerationError, match=r"pkg/_sync/mod.py:2: renaming made a union"):
        generate(check=True)


def test_no_generated_union_names_a_member_twice(fresh_generation: None) -> None:
    """What the API reference shows of the blocking client: each type once."""
    repeated = []
    for _, target in run_unasync.TREES:
        for path in sorted((run_unasync.ROOT / target).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                    members = [ast.unparse(m) for m in run_unasync._union_members(node)]
                    if len(set(members)) != len(members):
                        repeated.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert repeated == []
