"""The tests under every other CPython 3.11-3.13 on this machine (``nox -s interpreters``).

The README's test command runs the whole suite on one interpreter (the one nox runs on). This
runs, on every other CPython 3.11, 3.12 and 3.13 it finds, the unit tests (``-m "not
incusd"``) and a smoke subset against a real daemon (the core images tests, both flavours),
each in a virtual environment of its own with the project and its test group installed; the
whole suite again on each would take longer than CI may. The unit tests run Hypothesis with
fewer examples (``--fuzz-examples``) than the full suite does, and leave out the generator's
own tests (tests/conftest.py still checks the generated code on each interpreter).

    python scripts/every_python.py [--all-builds] [--dry-run] -- REQUIREMENT...

Interpreters are looked for by name (python3.11 ...) in every directory on PATH, in /usr/bin
and /usr/local/bin, and among pyenv's installed versions ($PYENV_ROOT, else ~/.pyenv), which
pyenv's shims would hide unless selected; neither the shims nor a virtual environment's python
count as interpreters of their own. Every interpreter found must work, venv and ensurepip
included: one that does not fails this run, loudly, never skipped. One build per version is
tested (the first found); a version the full suite ran on is not tested again. ``--all-builds``
tests every build (another 3.11 patch release, Debian's and pyenv's, ...). The last lines say
which versions ran, and which did not.

    python scripts/every_python.py --deps lowest|newest [--dry-run] -- REQUIREMENT...

runs the same tests against the two ends of the dependency range pyproject.toml allows,
instead of whatever pip picks: ``lowest`` takes the lowest version of every direct dependency
(extras included) on the newest supported CPython found, where old releases break first
(PyYAML 6.0 does not install on 3.12+; tqdm before 4.66.2 warns there); ``newest`` the newest
versions on the oldest CPython found, which new releases drop first. The set is resolved
with uv (``uv pip compile --resolution lowest-direct``, or ``highest``; ``python -m uv``, so
uv must be installed beside this script's Python) and printed; the requirements (the test
group) are installed constrained to it, into a virtual environment made afresh, so nothing of
an earlier resolution stays behind.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The CPython versions the project supports (pyproject.toml: requires-python >= 3.11).
SUPPORTED = ((3, 11), (3, 12), (3, 13))
#: A virtual environment per interpreter, kept between runs (nox's own directory).
VENVS = ROOT / ".nox" / "every-python"
#: The daemon smoke subset: the core images calls against a real incusd, both flavours.
SMOKE = ["tests/_async/test_daemon_images.py", "tests/_sync/test_daemon_images.py"]
#: With other dependency versions, the HTTPS tests too: how a failed TLS handshake reaches the
#: SDK is httpcore's to decide, and changed between its versions (see pyproject.toml).
DEPS_SMOKE = [*SMOKE, "tests/_async/test_daemon_https.py", "tests/_sync/test_daemon_https.py"]
#: How each end of the dependency range is resolved (uv's --resolution; "lowest-direct":
#: the SDK's own dependencies at their lowest, what they need at its newest).
RESOLUTIONS = {"lowest": "lowest-direct", "newest": "highest"}
#: What an interpreter must answer to count as a working CPython that can make a venv.
PROBE = (
    "import ensurepip, json, sys, venv; "
    "print(json.dumps([sys.implementation.name, list(sys.version_info[:3])]))"
)


@dataclass(frozen=True)
class Interpreter:
    path: Path
    version: tuple[int, int, int]

    @property
    def minor(self) -> tuple[int, int]:
        return self.version[:2]

    @property
    def name(self) -> str:
        return ".".join(map(str, self.version))

    def __str__(self) -> str:
        return f"CPython {self.name} ({self.path})"


class BrokenInterpreter(RuntimeError):
    """An interpreter was found that cannot run the tests; the message says which and why."""


def candidate_paths(environ: dict[str, str]) -> list[Path]:
    """Every file named python3.11, python3.12 or python3.13 where an interpreter is looked
    for, in that order, without duplicates (by real path) and without pyenv's shims."""
    names = [f"python{major}.{minor}" for major, minor in SUPPORTED]
    directories = [Path(entry) for entry in environ.get("PATH", "").split(os.pathsep) if entry]
    directories += [Path("/usr/local/bin"), Path("/usr/bin")]
    pyenv_root = Path(environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    if (pyenv_root / "versions").is_dir():
        directories += sorted(p / "bin" for p in (pyenv_root / "versions").iterdir())
    found: list[Path] = []
    seen: set[Path] = set()
    for directory in directories:
        # A pyenv shim runs whichever version pyenv selects, or fails; a virtual environment's
        # python is an interpreter found elsewhere: neither is one of its own.
        if directory.name == "shims" or (directory.parent / "pyvenv.cfg").exists():
            continue
        for name in names:
            path = directory / name
            if not (path.is_file() and os.access(path, os.X_OK)):
                continue
            real = path.resolve()
            if real not in seen:
                seen.add(real)
                found.append(path)
    return found


def probe(path: Path) -> Interpreter | None:
    """The interpreter at path; None if it is not CPython (PyPy names no python3.X, but a
    distribution might). Raises BrokenInterpreter if it does not run, or lacks venv/ensurepip."""
    try:
        result = subprocess.run(
            [str(path), "-I", "-c", PROBE], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokenInterpreter(f"{path} does not run: {exc}") from exc
    if result.returncode != 0:
        raise BrokenInterpreter(
            f"{path} cannot run the tests (it must run, with venv and ensurepip; on Debian: "
            f"apt-get install python3.X-venv): {result.stderr.strip()[-500:]}"
        )
    implementation, version = json.loads(result.stdout)
    if implementation != "cpython":
        return None
    return Interpreter(path, (version[0], version[1], version[2]))


def choose(
    found: list[Interpreter], covered: tuple[int, int], *, all_builds: bool
) -> tuple[list[Interpreter], list[tuple[Interpreter, str]]]:
    """Which interpreters to test, and which not with the reason."""
    chosen: list[Interpreter] = []
    left: list[tuple[Interpreter, str]] = []
    for interpreter in found:
        if interpreter.minor not in SUPPORTED:
            left.append((interpreter, "not a supported version"))
        elif not all_builds and interpreter.minor == covered:
            left.append((interpreter, "the full suite ran on this version"))
        elif not all_builds and any(c.minor == interpreter.minor for c in chosen):
            left.append((interpreter, "another build of this version is tested"))
        else:
            chosen.append(interpreter)
    return chosen, left


def choose_for_deps(found: list[Interpreter], resolution: str) -> Interpreter | None:
    """The interpreter one end of the dependency range is tested on, crosswise: the newest
    supported version found for the lowest dependencies, the oldest for the newest (the first
    build found of it). None if no supported version was found."""
    supported = [interpreter for interpreter in found if interpreter.minor in SUPPORTED]
    if not supported:
        return None
    pick = max if resolution == "lowest" else min
    version = pick(interpreter.version for interpreter in supported)
    return next(interpreter for interpreter in supported if interpreter.version == version)


def run(command: list[str], env: dict[str, str] | None = None) -> int:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def test_with(
    interpreter: Interpreter, requirements: list[str], fuzz_examples: int
) -> tuple[float, list[str]]:
    """Make (or reuse) its venv, install the project and the requirements, run the unit tests,
    then the smoke subset (also after the unit tests failed: each says something of its own).
    Returns the seconds taken and what failed."""
    started = time.monotonic()
    # One venv per build (two 3.11.x builds may both be tested), named stably between runs.
    build = hashlib.sha256(str(interpreter.path.resolve()).encode()).hexdigest()[:8]
    venv = VENVS / f"{interpreter.name}-{build}"
    python = venv / "bin" / "python"
    if not python.exists() and run([str(interpreter.path), "-m", "venv", str(venv)]):
        return time.monotonic() - started, ["python -m venv failed"]
    # A real build, as the tests session installs it (pip builds and reinstalls a directory
    # every time, so the tests see this checkout), with what the tests need.
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if run([*pip, ".", *requirements]):
        return time.monotonic() - started, ["pip install failed"]
    failures = run_tests(python, fuzz_examples, SMOKE)
    return time.monotonic() - started, failures


def compile_command(interpreter: Interpreter, resolution: str, output: Path) -> list[str]:
    """uv's resolution of the SDK's dependencies (every extra's too) at one end of the range,
    for this interpreter, written to output."""
    return [
        sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--all-extras",
        "--resolution", RESOLUTIONS[resolution], "--python", str(interpreter.path),
        "--no-header", "--no-annotate", "--quiet", "--output-file", str(output),
    ]  # fmt: skip


def run_deps(
    interpreter: Interpreter, resolution: str, requirements: list[str], fuzz_examples: int
) -> tuple[float, list[str]]:
    """Resolve one end of the dependency range, print it, install the project with it (and the
    requirements, constrained to it) into a fresh venv, and run the unit and smoke tests."""
    started = time.monotonic()
    venv = VENVS / f"deps-{resolution}"
    python = venv / "bin" / "python"
    resolved = VENVS / f"deps-{resolution}.txt"
    shutil.rmtree(venv, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    if run(compile_command(interpreter, resolution, resolved)):
        return time.monotonic() - started, [f"uv could not resolve the {resolution} versions"]
    for line in resolved.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            print(f"every_python: {resolution}: {line.strip()}", flush=True)
    if run([str(interpreter.path), "-m", "venv", "--without-pip", str(venv)]):
        return time.monotonic() - started, ["python -m venv failed"]
    # uv, not pip: the constraints make the set exact, and it installs in seconds. The project
    # is built from this checkout (never a wheel uv built earlier), with every extra.
    install = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python", str(python)]
    install += ["--refresh-package", "incus-images", "--constraints", str(resolved)]
    if run([*install, ".[progress]", *requirements]):
        return time.monotonic() - started, [f"installing the {resolution} versions failed"]
    failures = run_tests(python, fuzz_examples, DEPS_SMOKE)
    return time.monotonic() - started, failures


def run_tests(python: Path, fuzz_examples: int, smoke: list[str]) -> list[str]:
    """The unit tests, then the smoke subset (also after the unit tests failed: each says
    something of its own), with this venv's python. Returns what failed."""
    pytest = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # Fewer fuzzing examples than the full suite's 200-300: every property still runs on this
    # version, in seconds instead of most of a minute.
    unit_env = dict(os.environ, FUZZ_EXAMPLES=str(fuzz_examples))
    failures = []
    # The generator's own tests take a quarter of the unit tests' time and say nothing about
    # this version that tests/conftest.py does not check here anyway: it runs the generator on
    # this interpreter (--check under CI), which fails if its output differs from the tree's.
    unit = [*pytest, "-m", "not incusd", "--ignore=tests/test_generator.py"]
    if code := run(unit, env=unit_env):
        failures.append(f"the unit tests exited {code}")
    if code := run([*pytest, *smoke]):
        failures.append(f"the daemon smoke tests exited {code}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--all-builds", action="store_true", help="test every build found")
    parser.add_argument("--dry-run", action="store_true", help="only say what would run")
    parser.add_argument(
        "--deps",
        choices=sorted(RESOLUTIONS),
        default=None,
        help="test one end of the dependency range (on one interpreter) instead",
    )
    parser.add_argument(
        "--fuzz-examples",
        type=int,
        default=25,
        help="Hypothesis examples per property in the unit tests (default: 25)",
    )
    parser.add_argument(
        "requirements",
        nargs="*",
        help="what the tests need besides the project (the test group, the generator)",
    )
    args = parser.parse_args(argv)

    covered = (sys.version_info.major, sys.version_info.minor)
    full_suite = ".".join(map(str, sys.version_info[:3]))
    broken: list[str] = []
    found: list[Interpreter] = []
    for path in candidate_paths(dict(os.environ)):
        try:
            interpreter = probe(path)
        except BrokenInterpreter as exc:
            broken.append(str(exc))
            continue
        if interpreter is not None and all(
            known.path.resolve() != interpreter.path.resolve() for known in found
        ):
            found.append(interpreter)
    for interpreter in found:
        print(f"every_python: found {interpreter}", flush=True)
    if args.deps:
        return deps_main(args, found, broken)
    chosen, left = choose(found, covered, all_builds=args.all_builds)

    timings: list[tuple[Interpreter, float]] = []
    failed: list[str] = []
    if not args.dry_run:
        for interpreter in chosen:
            seconds, failures = test_with(interpreter, args.requirements, args.fuzz_examples)
            timings.append((interpreter, seconds))
            failed += [f"{interpreter}: {failure}" for failure in failures]

    print(f"every_python: the full suite runs on CPython {full_suite}, the version nox runs on")
    for interpreter, seconds in timings:
        print(
            f"every_python: ran the unit tests and daemon smoke on {interpreter}: {seconds:.0f} s"
        )
    for interpreter, why in left:
        print(f"every_python: not run on {interpreter}: {why}")
    if args.dry_run:
        for interpreter in chosen:
            print(f"every_python: would run on {interpreter}")
    for message in broken + failed:
        print(f"every_python: FAILED: {message}", file=sys.stderr)
    return 1 if broken or failed else 0


def deps_main(args: argparse.Namespace, found: list[Interpreter], broken: list[str]) -> int:
    """--deps: the tests with the lowest or the newest dependencies, on one interpreter."""
    interpreter = choose_for_deps(found, args.deps)
    failed = list(broken)
    if interpreter is None:
        failed.append("no CPython 3.11-3.13 found to test the dependencies on")
    elif args.dry_run:
        print(f"every_python: would run with the {args.deps} dependencies on {interpreter}")
    else:
        seconds, failures = run_deps(interpreter, args.deps, args.requirements, args.fuzz_examples)
        print(
            f"every_python: ran the unit tests and daemon smoke with the {args.deps} "
            f"dependencies on {interpreter}: {seconds:.0f} s"
        )
        failed += [f"{interpreter}, {args.deps} dependencies: {failure}" for failure in failures]
    for message in failed:
        print(f"every_python: FAILED: {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
