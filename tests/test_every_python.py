"""scripts/every_python.py, which CI uses to run the tests on the machine's other CPythons:
how it finds interpreters, which it tests, and that one it finds but cannot use fails the run.
Fake interpreters (shell scripts answering the probe) stand in for real ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import every_python
import pytest
from every_python import (
    BrokenInterpreter,
    Interpreter,
    candidate_paths,
    choose,
    choose_for_deps,
    compile_command,
    main,
    probe,
)


def fake_python(directory: Path, name: str, version: tuple[int, int, int]) -> Path:
    """An executable that answers the probe as a CPython of this version would."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    answer = json.dumps(["cpython", list(version)])
    path.write_text(f"#!/bin/sh\necho '{answer}'\n")
    path.chmod(0o755)
    return path


def broken_python(directory: Path, name: str) -> Path:
    """An interpreter without ensurepip, as Debian's python3.X is without python3.X-venv."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n"
    )
    path.chmod(0o755)
    return path


def test_candidates_come_from_path_and_pyenv_not_shims_or_venvs(tmp_path: Path) -> None:
    on_path = fake_python(tmp_path / "bin", "python3.12", (3, 12, 3))
    shim = fake_python(tmp_path / "pyenv" / "shims", "python3.13", (3, 13, 0))
    installed = fake_python(
        tmp_path / "pyenv" / "versions" / "3.13.1" / "bin", "python3.13", (3, 13, 1)
    )
    fake_python(tmp_path / "bin", "python3.10", (3, 10, 0))  # not a supported version
    venv = fake_python(tmp_path / "venv" / "bin", "python3.13", (3, 13, 1))
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /somewhere\n")
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "python3.12").symlink_to(on_path)  # the same interpreter again
    environ = {
        "PATH": f"{tmp_path / 'pyenv' / 'shims'}:{tmp_path / 'bin'}",
        "PYENV_ROOT": str(tmp_path / "pyenv"),
    }
    found = candidate_paths(environ)
    ours = [path for path in found if tmp_path in path.parents]
    assert ours == [on_path, installed]
    assert shim not in found
    assert venv not in found


def test_probe_reads_what_the_interpreter_says(tmp_path: Path) -> None:
    path = fake_python(tmp_path, "python3.12", (3, 12, 7))
    assert probe(path) == Interpreter(path, (3, 12, 7))


def test_an_interpreter_without_venv_is_broken(tmp_path: Path) -> None:
    path = broken_python(tmp_path, "python3.12")
    with pytest.raises(BrokenInterpreter, match="ensurepip") as info:
        probe(path)
    assert str(path) in str(info.value)


def interpreters(*versions: tuple[int, int, int]) -> list[Interpreter]:
    return [Interpreter(Path(f"/opt/py{n}/python"), version) for n, version in enumerate(versions)]


def test_one_build_per_version_not_the_full_suite_s_version() -> None:
    found = interpreters((3, 11, 2), (3, 11, 7), (3, 12, 1), (3, 13, 0), (3, 13, 2))
    chosen, left = choose(found, (3, 11), all_builds=False)
    assert [i.version for i in chosen] == [(3, 12, 1), (3, 13, 0)]
    assert [(i.version, why) for i, why in left] == [
        ((3, 11, 2), "the full suite ran on this version"),
        ((3, 11, 7), "the full suite ran on this version"),
        ((3, 13, 2), "another build of this version is tested"),
    ]


def test_all_builds_tests_every_supported_one() -> None:
    found = interpreters((3, 11, 2), (3, 12, 1), (3, 12, 4), (3, 14, 0))
    chosen, left = choose(found, (3, 11), all_builds=True)
    assert [i.version for i in chosen] == [(3, 11, 2), (3, 12, 1), (3, 12, 4)]
    assert [(i.version, why) for i, why in left] == [((3, 14, 0), "not a supported version")]


def test_a_broken_interpreter_fails_the_run_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = broken_python(tmp_path / "bin", "python3.13")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    assert main(["--dry-run"]) == 1
    out, err = capsys.readouterr()
    assert f"every_python: FAILED: {broken} cannot run the tests" in err
    assert "every_python: the full suite runs on CPython " in out


def test_the_run_says_which_versions_it_would_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A version other than this one's, which the full suite is taken to have run on.
    other = (3, 13, 9) if sys.version_info[:2] != (3, 13) else (3, 12, 9)
    name = f"python{other[0]}.{other[1]}"
    path = fake_python(tmp_path / "bin", name, other)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    assert main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    version = ".".join(map(str, other))
    assert f"every_python: found CPython {version} ({path})" in out
    assert f"every_python: would run on CPython {version} ({path})" in out


def test_the_lowest_dependencies_go_to_the_newest_version_the_newest_to_the_oldest() -> None:
    found = interpreters((3, 12, 1), (3, 13, 0), (3, 11, 7), (3, 11, 2), (3, 14, 0), (3, 10, 9))
    lowest = choose_for_deps(found, "lowest")
    newest = choose_for_deps(found, "newest")
    assert lowest is not None and lowest.version == (3, 13, 0)  # 3.14 is not supported yet
    assert newest is not None and newest.version == (3, 11, 2)
    assert choose_for_deps(interpreters((3, 10, 0)), "lowest") is None


def test_the_ends_of_the_range_are_uv_s_resolutions(tmp_path: Path) -> None:
    interpreter = Interpreter(Path("/opt/py/python3.11"), (3, 11, 2))
    lowest = compile_command(interpreter, "lowest", tmp_path / "lowest.txt")
    newest = compile_command(interpreter, "newest", tmp_path / "newest.txt")
    assert lowest[lowest.index("--resolution") + 1] == "lowest-direct"
    assert newest[newest.index("--resolution") + 1] == "highest"
    for command in (lowest, newest):
        # For that interpreter's version and markers, with every extra's dependencies too.
        assert command[command.index("--python") + 1] == "/opt/py/python3.11"
        assert "--all-extras" in command
        assert command[:5] == [sys.executable, "-m", "uv", "pip", "compile"]


def test_a_deps_run_says_where_it_would_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # /usr/bin and /usr/local/bin are searched too: these versions win over whatever they hold
    # (on a tie, the first found, and PATH comes first).
    old = fake_python(tmp_path / "bin", "python3.11", (3, 11, 0))
    new = fake_python(tmp_path / "bin", "python3.13", (3, 13, 999))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    assert main(["--deps", "lowest", "--dry-run"]) == 0
    assert main(["--deps", "newest", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would run with the lowest dependencies on CPython 3.13.999 ({new})" in out
    assert f"would run with the newest dependencies on CPython 3.11.0 ({old})" in out


def test_a_deps_run_without_a_supported_interpreter_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(every_python, "candidate_paths", lambda environ: [])
    assert main(["--deps", "lowest", "--dry-run"]) == 1
    assert "no CPython 3.11-3.13 found" in capsys.readouterr().err
