"""Developer sessions. `nox -l` lists them; `sh scripts/bootstrap.sh SESSION` also installs nox
and incusd first on a fresh machine.

    gen        regenerate the blocking twin (src/incus_images/_sync, tests/_sync) from _async/
    tests      the whole test suite, both flavours, against the installed wheel and a real incusd
    interpreters  on every other CPython 3.11-3.13 on the machine: the unit tests and a daemon
               smoke subset (scripts/every_python.py; it says which versions ran)
    deps-lowest  the same unit tests and daemon smoke subset with the lowest version of every
               dependency pyproject.toml allows, on the newest CPython found; deps-newest with
               the newest, on the oldest (scripts/every_python.py --deps; it prints the set)
    lint       ruff check on all code, the generated _sync trees included (the formatter checks
               the hand-written code: it would move the generated lines off their source's)
    typecheck  mypy --strict (generated code included)
    build      sdist + wheel, and proof that the wheel holds the generated _sync package
    demo       the SDK's main job against the local daemon (a throwaway one if none runs)
    docs       the documentation site (mkdocs.yml, docs/), built with --strict into site/ (the
               tour executed against a throwaway daemon: root), then checked as files
    bench      start-up, a simplestreams catalogue, then big transfers, against the incus CLI,
               curl and httpx (root; minutes; GBs of disk; --only startup or --only catalogue
               for one part alone)
    reliability  the long runs behind RELIABILITY.md: fault injection, fuzzing, load (root)
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
# A session that cannot run fails: nox's default is to skip it and exit 0.
nox.options.error_on_missing_interpreters = True

#: The interpreter nox itself runs on (scripts/bootstrap.sh makes it the system's python3,
#: 3.11 on Debian 12, 3.13 on Debian 13): a pinned version would be missing on one of them.
PYTHON = None
PYPROJECT = nox.project.load_toml("pyproject.toml")
GENERATOR = ["unasync==0.6.0", "setuptools"]
LINTED = ["src", "tests", "scripts", "docs/examples", "noxfile.py", "hatch_build.py"]


def _groups(*names: str) -> list[str]:
    return [req for name in names for req in nox.project.dependency_groups(PYPROJECT, name)]


def _install_with(session: nox.Session, *groups: str) -> None:
    """Install the project (a real, non-editable build: tests see what users get) and groups."""
    session.install(".", *_groups(*groups))


@nox.session(python=PYTHON)
def gen(session: nox.Session) -> None:
    session.install(*GENERATOR)
    session.run("python", "scripts/run_unasync.py", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install(*GENERATOR)
    # The docs group too: tests/test_docs_site.py builds the site and checks it.
    _install_with(session, "test", "docs")
    # The suite proper fuzzes at full strength; a bare pytest run fuzzes lightly
    # (tests/fuzz_settings.py).
    session.run("python", "-m", "pytest", *session.posargs, env={"FUZZ_THOROUGH": "1"})


@nox.session(python=PYTHON)
def interpreters(session: nox.Session) -> None:
    """Unit tests and a daemon smoke subset on every other CPython 3.11-3.13 found.

    The tests session covers the interpreter nox runs on; this, the others. One that is found
    but cannot run fails the session. Arguments go to scripts/every_python.py
    (``nox -s interpreters -- --all-builds``: every build, not one per version).
    """
    # The generator too: tests/conftest.py checks the generated code is current.
    requirements = [*GENERATOR, *_groups("test")]
    session.run("python", "scripts/every_python.py", *session.posargs, "--", *requirements)


def _deps(session: nox.Session, resolution: str) -> None:
    # uv resolves the lowest versions (pip cannot) and installs them; it runs as python -m uv.
    session.install("uv>=0.5")
    requirements = [*GENERATOR, *_groups("test")]
    session.run(
        "python", "scripts/every_python.py", "--deps", resolution, *session.posargs, "--",
        *requirements,
    )  # fmt: skip


@nox.session(python=PYTHON, name="deps-lowest")
def deps_lowest(session: nox.Session) -> None:
    """Unit tests and the daemon smoke subset with every dependency at its lowest allowed
    version (uv's lowest-direct resolution), on the newest supported CPython found: old
    releases break first on new Pythons.

    A bound that does not hold fails here: raise it to the lowest version that works.
    """
    _deps(session, "lowest")


@nox.session(python=PYTHON, name="deps-newest")
def deps_newest(session: nox.Session) -> None:
    """The same with the newest versions available, resolved afresh, on the oldest CPython:
    new releases drop old Pythons first."""
    _deps(session, "newest")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install(*GENERATOR)
    session.install(*_groups("lint"))
    session.run("python", "scripts/run_unasync.py")
    # pyproject.toml's respect-gitignore = false makes ruff read the git-ignored _sync trees.
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install(*GENERATOR)
    _install_with(session, "typecheck")
    session.run("python", "scripts/run_unasync.py")
    session.run("mypy")


@nox.session(python=PYTHON)
def build(session: nox.Session) -> None:
    session.install("build")
    session.run("rm", "-rf", "dist", external=True)
    session.run("python", "-m", "build", "--outdir", "dist")
    session.run("python", "scripts/check_wheel.py", "dist")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the site offline with --strict (a broken link or cross-reference fails it), then
    check what was built (tests/test_docs_site.py): it works opened as files.

    mkdocstrings reads the source statically from src/, so the generated _sync package, which
    the blocking Client's reference comes from, is made first. The tour page is
    docs/tour.ipynb executed at build time (scripts/docs_tour_page.py): the SDK is installed
    for its kernel, and the build runs against a throwaway daemon (root and incusd; without
    them the build fails, it never makes a page without outputs).
    """
    session.install(*GENERATOR)
    # The test group for pytest and the fixtures of tests/conftest.py.
    _install_with(session, "docs", "test")
    session.run("python", "scripts/run_unasync.py")
    # NO_MKDOCS_2_WARNING: Material's banner about MkDocs 2 says nothing about this site.
    session.run(
        "python", "scripts/throwaway_incusd.py", "run", "--",
        "mkdocs", "build", "--strict", "--clean", "--site-dir", "site",
        env={"NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    session.run("python", "-m", "pytest", "tests/test_docs_site.py", env={"DOCS_SITE": "site"})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    session.install(".")
    session.run("python", "scripts/demo.py", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Arguments go to scripts/bench.py, e.g. nox -s bench -- --sizes 1 --rounds 5."""
    session.install(".")
    session.run("python", "scripts/bench.py", *session.posargs)


@nox.session(python=PYTHON)
def reliability(session: nox.Session) -> None:
    """The long versions of the suites CI runs short (RELIABILITY.md has their figures)."""
    _install_with(session, "test")
    session.run("python", "-m", "tests.faults", "--trials", "300", "--kills", "16")
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/test_fuzz.py",
        "tests/test_fuzz_remotes.py",
        "tests/test_fuzz_cluster.py",
        "tests/test_fuzz_copy.py",
        "-q",
        env={"FUZZ_EXAMPLES": "2000"},
    )
    session.run("python", "-m", "tests.load", "--calls", "2000")
