"""The start-up part of scripts/bench.py: what a short script pays (issue 9).

    python scripts/bench.py --only startup [--startup-rounds 30]   # nox -s bench -- --only startup

A throwaway incusd of its own stores 200 distinct tiny unified images (scripts/tiny_image.py).
Every variant runs in a fresh process, interleaved with the others and rotated every round, so
that background load hits all of them alike; figures are wall times of whole processes
(interpreter start included) and their CPU time (user + system, from the kernel's accounting
of reaped children). Ratios are medians of per-round ratios, printed with their spread.

* **import**: ``python -c STMT`` with ``pass``, ``import httpx``, ``import incus_images`` and
  ``from incus_images import Client``. Target: each of the last two at most 1.15x
  ``import httpx`` (the bare import defers nearly everything; a script that uses a client pays
  the second).
* **list**: a fresh process imports, makes a client on the daemon's socket, lists the 200
  images with their details and prints how many there are:

  * ``sdk``: ``Client(endpoint).images.list()`` (``sdk-async``: the same with AsyncClient);
  * ``httpx``: plain httpx, ``HTTPTransport(uds=...)`` as httpx documents it for a unix socket,
    one ``GET /1.0/images?recursion=1`` and ``.json()`` (the transport loads the CA bundle
    it never uses on a unix socket);
  * ``httpx-noverify``: the same with ``verify=False``, which spares that (the SDK does too):
    the reference the target is checked against;
  * ``incus-cli``: ``incus image list`` with its default (table) format, pointed at the daemon
    with INCUS_DIR and a configuration directory of its own (INCUS_CONF).

  Targets: ``sdk`` at most 1.05x ``httpx-noverify`` and at most 1.35x ``incus-cli``.
* **get CPU**: client CPU time per ``images.get(fp)``, in a loop of COUNT calls after COUNT
  calls of warm-up (scripts/bench_child.py ``calls``), against plain httpx sending the same
  GET and ``json.loads``-ing the body. Targets: at most 1.2x (sync) and 1.5x (async).

``-X importtime`` of the ``sdk`` list process names the modules that cost the most. The
bytecode of the SDK and its dependencies is written first (bench.py, ``write_bytecode``), as
pip does at install: an editable install, or packages uv installed, under
PYTHONDONTWRITEBYTECODE would otherwise be compiled from source in every child.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import attrs
from bench_common import HERE, interleave
from throwaway_incusd import ThrowawayIncusd
from tiny_image import unified_image

IMAGE_COUNT = 200
#: Calls per loop of the get-CPU children (as many again warm up first).
CALLS = 1000
#: Rounds of the get-CPU children: each runs for seconds, and CPU time varies little.
CPU_ROUNDS = 5
#: -X importtime runs, whose per-module medians name the offenders.
IMPORTTIME_RUNS = 5

IMPORT_STATEMENTS = {
    "python": "pass",
    "httpx": "import httpx",
    "sdk": "import incus_images",
    "sdk-client": "from incus_images import Client",
}
#: The issue's target names ``import incus_images``, which defers all but the errors; what a
#: script that uses a client pays is ``from incus_images import Client``, held to it as well.
IMPORT_TARGETS = [("sdk", "httpx", 1.15), ("sdk-client", "httpx", 1.15)]
LIST_TARGETS = [("sdk", "httpx-noverify", 1.05), ("sdk", "incus-cli", 1.35)]
CPU_TARGETS = [("sdk-sync", "httpx-sync", 1.2), ("sdk-async", "httpx-async", 1.5)]


def list_programs(socket_path: str) -> dict[str, str]:
    """The list variants' programs (``python -c``), as a user would write them."""
    endpoint = f"unix://{socket_path}"
    return {
        "sdk": (
            "from incus_images import Client\n"
            f"with Client({endpoint!r}) as client:\n"
            "    print(len(client.images.list()))\n"
        ),
        "sdk-async": (
            "import asyncio\n"
            "from incus_images import AsyncClient\n"
            "async def main():\n"
            f"    async with AsyncClient({endpoint!r}) as client:\n"
            "        print(len(await client.images.list()))\n"
            "asyncio.run(main())\n"
        ),
        "httpx": _httpx_list(socket_path, ""),
        "httpx-noverify": _httpx_list(socket_path, ", verify=False"),
    }


def _httpx_list(socket_path: str, transport_options: str) -> str:
    return (
        "import httpx\n"
        f"transport = httpx.HTTPTransport(uds={socket_path!r}{transport_options})\n"
        "with httpx.Client(transport=transport, base_url='http://incus') as client:\n"
        "    answer = client.get('/1.0/images', params={'recursion': '1'})\n"
        "    print(len(answer.json()['metadata']))\n"
    )


@attrs.frozen
class Run:
    seconds: float
    cpu_seconds: float
    stdout: str


def run_process(argv: list[str], env: dict[str, str]) -> Run:
    """Run argv to completion: its wall time, its CPU time (user + system) and its stdout.

    The children run one at a time, so the growth of this process's reaped-children usage
    is the child's own.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{argv} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds=seconds, cpu_seconds=cpu, stdout=result.stdout)


def spread(values: list[float]) -> str:
    """The middle 80 % of values (all of them when there are few)."""
    ordered = sorted(values)
    cut = len(ordered) // 10
    kept = ordered[cut : len(ordered) - cut] if cut else ordered
    return f"{kept[0]:.2f}-{kept[-1]:.2f}"


def ratios(
    runs: dict[str, list[Run]], variant: str, reference: str, value: Callable[[Run], float]
) -> list[float]:
    return [value(a) / value(b) for a, b in zip(runs[variant], runs[reference], strict=True)]


def print_table(title: str, runs: dict[str, list[Run]]) -> None:
    print(f"\n{title} ({len(next(iter(runs.values())))} rounds):")
    print(f"  {'variant':15} {'wall min':>9} {'median':>8} {'CPU median':>11}   ms")
    for variant, variant_runs in runs.items():
        walls = [r.seconds * 1000 for r in variant_runs]
        cpus = [r.cpu_seconds * 1000 for r in variant_runs]
        print(
            f"  {variant:15} {min(walls):9.1f} {statistics.median(walls):8.1f} "
            f"{statistics.median(cpus):11.1f}"
        )


def check(
    runs: dict[str, list[Run]],
    targets: list[tuple[str, str, float]],
    verdicts: list[tuple[str, bool]],
    *,
    what: str,
    value: Callable[[Run], float],
    also: Sequence[tuple[str, str]] = (),
) -> None:
    """Print the median per-round ratios; record a verdict for each target."""
    for variant, reference, limit in [*targets, *((v, r, float("inf")) for v, r in also)]:
        per_round = ratios(runs, variant, reference, value)
        ratio = statistics.median(per_round)
        line = f"  {what} {variant} / {reference}: {ratio:.3f}x (spread {spread(per_round)})"
        if limit == float("inf"):
            print(line)
            continue
        ok = ratio <= limit
        verdicts.append((f"{what} {variant}/{reference} <= {limit}", ok))
        print(f"{line}; target <= {limit:.2f}x: {'met' if ok else 'MISSED'}")


def import_offenders(argv: list[str], env: dict[str, str], runs: int, top: int = 15) -> None:
    """The modules with the largest own import time (median of runs), and totals per package."""
    own: dict[str, list[int]] = {}
    for _ in range(runs):
        result = subprocess.run(
            [argv[0], "-X", "importtime", *argv[1:]],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$", line)
            if match:
                own.setdefault(match.group(4), []).append(int(match.group(1)))
    medians = {module: statistics.median(times) / 1000 for module, times in own.items()}
    print(f"\n  -X importtime of the sdk list process (own time, median of {runs} runs, ms):")
    for module, ms in sorted(medians.items(), key=lambda item: -item[1])[:top]:
        print(f"    {ms:6.1f}  {module}")
    packages: dict[str, float] = {}
    for module, ms in medians.items():
        packages[_package(module)] = packages.get(_package(module), 0.0) + ms
    print(f"  by package ({len(medians)} modules, {sum(medians.values()):.1f} ms in all):")
    for name, ms in sorted(packages.items(), key=lambda item: -item[1]):
        print(f"    {ms:6.1f}  {name}")


def _package(module: str) -> str:
    root = module.split(".")[0]
    if root in ("attr", "attrs"):
        return "attrs"
    return root if root in _THIRD_PARTY else "(standard library)"


_THIRD_PARTY = {
    "incus_images", "httpx", "httpcore", "h11", "anyio", "sniffio", "idna", "certifi",
    "cattrs", "typing_extensions", "yaml", "cryptography", "_cffi_backend",
}  # fmt: skip


class StartupBench:
    """A throwaway daemon holding IMAGE_COUNT tiny images, and the start-up measurements."""

    def __init__(self, workdir: Path, parent_dir: str | None) -> None:
        self._daemon = ThrowawayIncusd(parent_dir=parent_dir)
        self._workdir = workdir
        self.python = sys.executable

    def __enter__(self) -> StartupBench:
        self._daemon.start()
        try:
            config = self._workdir / "incus-cli-config-startup"
            config.mkdir(exist_ok=True)
            self.env = dict(
                os.environ, INCUS_DIR=str(self._daemon.directory), INCUS_CONF=str(config)
            )
            self.fingerprint = self._store_images()
        except BaseException:
            self._daemon.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._daemon.stop()

    @property
    def pid(self) -> int:
        return self._daemon.pid

    def _store_images(self) -> str:
        """Store IMAGE_COUNT distinct tiny images (each has a random payload); one's
        fingerprint."""
        from incus_images import Client

        started = time.perf_counter()
        with Client(self._daemon.endpoint) as client:
            for number in range(IMAGE_COUNT):
                properties = {"os": "tiny", "release": "1", "description": f"start-up {number}"}
                image = client.images.create(unified_image(properties), wait=True)
            assert len(client.images.list(0)) == IMAGE_COUNT
        print(f"stored {IMAGE_COUNT} tiny images in {time.perf_counter() - started:.1f} s")
        return image.fingerprint

    def run(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        print(f"\nstart-up (load average before: {_load()})")
        self._imports(rounds, verdicts)
        self._lists(rounds, verdicts)
        self._get_cpu(verdicts)
        print(f"\n  load average after: {_load()}")

    def _imports(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        def measure(variant: str) -> Run:
            return run_process([self.python, "-c", IMPORT_STATEMENTS[variant]], self.env)

        runs = interleave(list(IMPORT_STATEMENTS), rounds, measure)
        print_table("python -c IMPORT", runs)
        for variant, statement in IMPORT_STATEMENTS.items():
            print(f"    {variant}: {statement}")
        check(
            runs, IMPORT_TARGETS, verdicts, what="import wall", value=lambda r: r.seconds
        )  # fmt: skip
        check(
            runs, [], verdicts, what="import CPU", value=lambda r: r.cpu_seconds,
            also=[("sdk", "httpx"), ("sdk-client", "httpx")],
        )  # fmt: skip

    def _lists(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        programs = list_programs(self._daemon.socket_path)

        def measure(variant: str) -> Run:
            if variant == "incus-cli":
                run = run_process(["incus", "image", "list"], self.env)
                listed = len(re.findall(r"^\|.*\| [0-9a-f]{12} +\|", run.stdout, re.MULTILINE))
            else:
                run = run_process([self.python, "-c", programs[variant]], self.env)
                listed = int(run.stdout)
            if listed != IMAGE_COUNT:
                raise RuntimeError(f"{variant} listed {listed} images, not {IMAGE_COUNT}")
            return run

        runs = interleave([*programs, "incus-cli"], rounds, measure)
        print_table(f"process start + list of {IMAGE_COUNT} images", runs)
        check(
            runs, LIST_TARGETS, verdicts, what="list wall", value=lambda r: r.seconds,
            also=[("sdk", "httpx"), ("sdk-async", "httpx-noverify")],
        )  # fmt: skip
        check(
            runs, [], verdicts, what="list CPU", value=lambda r: r.cpu_seconds,
            also=[("sdk", "httpx-noverify"), ("sdk", "httpx")],
        )  # fmt: skip
        import_offenders([self.python, "-c", programs["sdk"]], self.env, IMPORTTIME_RUNS)

    def _get_cpu(self, verdicts: list[tuple[str, bool]]) -> None:
        flavours = {
            "sdk-sync": "sync",
            "sdk-async": "async",
            "httpx-sync": "httpx",
            "httpx-async": "httpx_async",
        }
        per_call: dict[str, list[dict[str, float]]] = {}

        def measure(variant: str) -> Run:
            argv = [self.python, str(HERE / "bench_child.py"), "calls", flavours[variant]]
            run = run_process(
                [*argv, self._daemon.endpoint, self.fingerprint, str(CALLS)], self.env
            )
            per_call.setdefault(variant, []).append(json.loads(run.stdout))
            return run

        interleave(list(flavours), CPU_ROUNDS, measure)
        print(f"\nimages.get(): client CPU per call ({CALLS} calls after {CALLS} to warm up):")
        print(f"  {'variant':12} {'CPU us':>8} {'wall us':>8}")
        for variant, results in per_call.items():
            cpu = statistics.median(r["cpu_us"] for r in results)
            wall = statistics.median(r["wall_us"] for r in results)
            print(f"  {variant:12} {cpu:8.0f} {wall:8.0f}")
        runs = {
            variant: [
                Run(seconds=r["wall_us"], cpu_seconds=r["cpu_us"], stdout="") for r in results
            ]
            for variant, results in per_call.items()
        }
        check(runs, CPU_TARGETS, verdicts, what="get() CPU", value=lambda r: r.cpu_seconds)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
