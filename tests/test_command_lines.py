"""The project's command lines as a newcomer meets them (issue 19).

Every command line in scripts/ and docs/examples/, and ``python -m tests.faults`` /
``python -m tests.load``, answers ``--help`` with its usage on stdout and exit status 0, having
written nothing; the tiny image script makes the README's image; and scripts/bootstrap.sh
installs for each session only what that session needs, as the README's table says.
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
EXAMPLES = ROOT / "docs" / "examples"

#: Files of scripts/ that are not command lines, and why.
NOT_COMMAND_LINES = {
    "bench_common.py": "what the benchmark scripts share (a library)",
    "bench_build.py": "a part of bench.py (python scripts/bench.py --only build)",
    "bench_catalogue.py": "a part of bench.py (python scripts/bench.py --only catalogue)",
    "bench_copy.py": "a part of bench.py (python scripts/bench.py --only copy)",
    "bench_startup.py": "a part of bench.py (python scripts/bench.py --only startup)",
    "griffe_public_reference.py": "a griffe extension the documentation site loads",
    "docs_tour_page.py": "an MkDocs hook the documentation site loads (mkdocs.yml)",
    "run_notebook.py": "a module the site's hook and tests/test_notebook.py import (execute)",
    "simplestreams_server.py": "a module the tests import (SimpleStreamsServer)",
    "debian-mirror.sh": "sourced by install-incus.sh and fresh-debian.sh",
}


def _is_command_line(path: Path) -> bool:
    text = path.read_text()
    if path.suffix == ".py":
        return 'if __name__ == "__main__":' in text
    return text.startswith("#!")


def _command_lines() -> list[tuple[str, list[str]]]:
    """(what the help must name, the command without --help) for every command line."""
    found = []
    for path in sorted(SCRIPTS.iterdir()):
        if path.suffix not in (".py", ".sh") or not _is_command_line(path):
            continue
        program = [sys.executable] if path.suffix == ".py" else ["sh"]
        found.append((path.name, [*program, str(path)]))
    # The documentation's example programs (docs/examples/) are command lines too.
    for path in sorted(EXAMPLES.glob("*.py")):
        found.append((path.name, [sys.executable, str(path)]))
    for module, name in (("tests.faults", "faults"), ("tests.load", "load")):
        found.append((name, [sys.executable, "-m", module]))
    return found


COMMAND_LINES = _command_lines()


def test_every_file_in_scripts_is_a_command_line_or_says_why_not() -> None:
    names = {path.name for path in SCRIPTS.iterdir() if path.suffix in (".py", ".sh")}
    command_lines = {name for name, _ in COMMAND_LINES}
    assert command_lines.isdisjoint(NOT_COMMAND_LINES), "a command line is listed as none"
    assert names == (command_lines & names) | set(NOT_COMMAND_LINES)
    # The ones a newcomer is told to run are among them.
    assert {"tiny_image.py", "bootstrap.sh", "demo.py", "bench_child.py"} <= command_lines
    assert "mirror.py" in command_lines


#: The workspaces of nox and of scripts/bootstrap.sh: other sessions (CI runs some side by
#: side) make venvs there while these tests run, so they are not looked at at all.
_TOOL_WORKSPACES = {".nox", ".tools"}


def _snapshot(directory: Path) -> dict[str, int]:
    """Every path under directory with its mtime; .git only as itself (a file added at its
    top changes its mtime; its insides are git's), the tools' workspaces not at all."""
    seen = {}
    for parent, dirs, files in os.walk(directory):
        if Path(parent) == directory:
            dirs[:] = [name for name in dirs if name not in _TOOL_WORKSPACES]
        elif Path(parent).name == ".git":
            dirs.clear()
            continue
        for name in dirs + files:
            path = Path(parent, name)
            seen[str(path.relative_to(directory))] = path.lstat().st_mtime_ns
    return seen


@pytest.mark.parametrize(
    ("name", "command"), COMMAND_LINES, ids=[name for name, _ in COMMAND_LINES]
)
def test_help_exits_0_with_usage_and_writes_nothing(
    name: str, command: list[str], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    before = _snapshot(ROOT)
    env = dict(
        os.environ,
        # python -m tests.faults runs from the repository's root: its package must be found.
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        # Bytecode caches are the interpreter's writes, not the script's: kept out of the way.
        PYTHONPYCACHEPREFIX=str(tmp_path_factory.mktemp("pycache")),
    )
    # The test run's refusal to start daemons stays set (tests/conftest.py): a script that did
    # not stop at --help fails here rather than start one.
    result = subprocess.run(
        [*command, "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert name in result.stdout, "the help does not name the command"
    assert len(result.stdout.splitlines()) >= 3, result.stdout
    assert result.stderr == ""
    assert list(cwd.iterdir()) == []
    after = _snapshot(ROOT)
    assert {path for path in after if after[path] != before.get(path)} == set()


def test_tiny_image_writes_the_readme_image(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "tiny_image.py"), "image.tar.gz", "-p", "os=debian"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "image.tar.gz").read_bytes()
    assert hashlib.sha256(data).hexdigest() in result.stdout
    with tarfile.open(tmp_path / "image.tar.gz") as archive:
        metadata = archive.extractfile("metadata.yaml")
        assert metadata is not None
        assert '"os": "debian"' in metadata.read().decode()
        assert "rootfs" in archive.getnames()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("python scripts/tiny_image.py image.tar.gz") < readme.index(
        'images.create("image.tar.gz"'
    )


@pytest.mark.parametrize("arguments", [[], ["-p", "novalue"]])
def test_tiny_image_refuses_a_bad_command_line(arguments: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "tiny_image.py"), *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def _bootstrap_needs(*sessions: str) -> set[str]:
    result = subprocess.run(
        ["sh", str(SCRIPTS / "bootstrap.sh"), "--dry-run", *sessions],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    (needs,) = [line for line in result.stdout.splitlines() if line.startswith("needs:")]
    return set(needs.removeprefix("needs:").split())


def test_the_demo_installs_only_incus_and_venv() -> None:
    assert _bootstrap_needs("demo") == {"python3-venv", "incus-base", "incus-client"}
    assert _bootstrap_needs("lint", "typecheck", "build") == {"python3-venv"}
    assert _bootstrap_needs("docs") == {"python3-venv", "incus-base", "incus-client"}
    assert {"busybox-static", "dnsmasq-base"} <= _bootstrap_needs("tests")
    assert {"curl", "time"} <= _bootstrap_needs("bench")
    assert {"curl", "time"}.isdisjoint(_bootstrap_needs("tests", "interpreters", "demo"))


def _readme_install_table() -> list[tuple[list[str], set[str]]]:
    """The README's "Run it" table: (sessions, Debian packages) per row."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| command | Debian packages |") :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        sessions, packages = line.strip("|").split("|")
        rows.append((re.findall(r"`([^`]+)`", sessions), set(re.findall(r"`([^`]+)`", packages))))
    return rows


def _nox_sessions() -> set[str]:
    """The sessions noxfile.py defines (its name= or the function's name)."""
    names = set()
    functions = [
        node
        for node in ast.parse((ROOT / "noxfile.py").read_text()).body
        if isinstance(node, ast.FunctionDef)
    ]
    for function in functions:
        for decorator in function.decorator_list:
            if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "nox.session":
                given = [k.value for k in decorator.keywords if k.arg == "name"]
                names.add(ast.literal_eval(given[0]) if given else function.name)
    return names


def test_the_readme_says_what_each_session_installs() -> None:
    rows = _readme_install_table()
    (every,) = [packages for sessions, packages in rows if not sessions]
    listed = [session for sessions, _ in rows for session in sessions]
    assert sorted(listed) == sorted(_nox_sessions()), "a session is missing from the table"
    for sessions, packages in rows:
        for session in sessions:
            assert _bootstrap_needs(session) == every | packages, session


def test_bootstrap_refuses_an_unknown_session_before_installing() -> None:
    result = subprocess.run(
        # --dry-run: were the refusal missing, this test would install nothing either.
        ["sh", str(SCRIPTS / "bootstrap.sh"), "--dry-run", "demo", "tset"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown session 'tset'" in result.stderr
    assert result.stdout == "", "it got as far as what the sessions need"
