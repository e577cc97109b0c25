"""Load: many concurrent calls on one client, async (tasks) and blocking (threads).

    python -m tests.load [--calls 2000] [--threads 16] [--async-limit N]
                         [--transport unix,https] [--flavour async,threads] [--rounds 1]

Starts a throwaway incusd (root and incusd needed; see throwaway_incusd.py), serves it over
HTTPS too with a trusted client certificate, and runs, on one client per flavour and
transport, a mix of calls: list, get (by prefix), get_alias, create_alias + delete_alias of
unique names, create + delete of a tiny image, and export of a tiny image into a temporary
directory. Async calls all run at once in one anyio task group (at most --async-limit at a
time, if given); blocking calls run on a pool of threads sharing one Client, which none of them
used before (its connection pool is set up under contention). Prints calls per second, and
fails (exit status 1) on any error, on any warning (ResourceWarning for an unclosed socket
included, after a gc.collect()), and when the daemon is not left as it was found.

Without --async-limit, every async call is in flight at once, and those beyond the client's 100
connections queue for one (RELIABILITY.md has the figures of both ways).

tests/test_load.py runs the same workload briefly (200 calls) against the test session's daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import attrs
from tiny_image import unified_image

from incus_images import AsyncClient, Client, Image, NotFoundError

#: How often each kind of operation comes up in the mix (out of 16).
MIX: dict[str, int] = {
    "list": 3,
    "get": 3,
    "get_alias": 3,
    "alias": 3,  # create_alias + delete_alias
    "create": 2,  # create(wait=True) + delete(wait=True)
    "export": 2,
}
#: SDK calls each operation makes.
CALLS = {"list": 1, "get": 1, "get_alias": 1, "alias": 2, "create": 2, "export": 1}


def plan(operations: int) -> list[str]:
    """operations kinds of operation in the proportions of MIX, spread evenly (smooth
    weighted round robin) so that every stretch of the run has the whole mix."""
    total = sum(MIX.values())
    credit = dict.fromkeys(MIX, 0)
    pattern = []
    for _ in range(total):
        for kind, weight in MIX.items():
            credit[kind] += weight
        chosen = max(credit, key=lambda kind: credit[kind])
        credit[chosen] -= total
        pattern.append(chosen)
    return list(itertools.islice(itertools.cycle(pattern), operations))


@attrs.define
class Base:
    """The image and alias every reading operation uses, and what the run still owes."""

    fingerprint: str
    size: int
    alias: str
    workdir: Path
    #: Images created by the run and not yet deleted (deleted at the end whatever happens).
    created: set[str] = attrs.field(factory=set)
    #: Aliases created by the run and not yet deleted.
    aliases: set[str] = attrs.field(factory=set)
    lock: threading.Lock = attrs.field(factory=threading.Lock)


@attrs.frozen
class Result:
    label: str
    operations: int
    calls: int
    seconds: float
    errors: tuple[str, ...]

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.label}: {self.calls} calls ({self.operations} operations) in "
            f"{self.seconds:.2f} s = {self.calls_per_second:.0f} calls/s, "
            f"{len(self.errors)} errors"
        )


def unique_alias() -> str:
    return f"load-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------------------------
# The operations, async.


async def _async_list(client: AsyncClient, base: Base, index: int) -> None:
    images = await client.images.list()
    assert base.fingerprint in [image.fingerprint for image in images]


async def _async_get(client: AsyncClient, base: Base, index: int) -> None:
    image = await client.images.get(base.fingerprint[:12])
    assert image.fingerprint == base.fingerprint


async def _async_get_alias(client: AsyncClient, base: Base, index: int) -> None:
    alias = await client.images.get_alias(base.alias)
    assert alias.target == base.fingerprint


async def _async_alias(client: AsyncClient, base: Base, index: int) -> None:
    name = unique_alias()
    with base.lock:
        base.aliases.add(name)
    alias = await client.images.create_alias(name, base.fingerprint[:16], description="load")
    assert alias.target == base.fingerprint
    await client.images.delete_alias(name)
    with base.lock:
        base.aliases.discard(name)


async def _async_create(client: AsyncClient, base: Base, index: int) -> None:
    image = await client.images.create(unified_image(), wait=True)
    assert isinstance(image, Image)
    with base.lock:
        base.created.add(image.fingerprint)
    await client.images.delete(image.fingerprint, wait=True)
    with base.lock:
        base.created.discard(image.fingerprint)


async def _async_export(client: AsyncClient, base: Base, index: int) -> None:
    (path,) = await client.images.export(base.fingerprint, base.workdir / f"async-{index}.tar.gz")
    assert path.stat().st_size == base.size
    path.unlink()


ASYNC_OPERATIONS: dict[str, Callable[[AsyncClient, Base, int], Awaitable[None]]] = {
    "list": _async_list,
    "get": _async_get,
    "get_alias": _async_get_alias,
    "alias": _async_alias,
    "create": _async_create,
    "export": _async_export,
}


async def run_async(
    client: AsyncClient, base: Base, operations: int, label: str, *, limit: int | None = None
) -> Result:
    """Start every operation at once on one AsyncClient (at most limit in flight); wait."""
    errors: list[str] = []
    kinds = plan(operations)
    limiter = anyio.CapacityLimiter(limit or operations)

    async def one(index: int, kind: str) -> None:
        try:
            async with limiter:
                await ASYNC_OPERATIONS[kind](client, base, index)
        except Exception as exc:
            errors.append(f"{kind} #{index}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for index, kind in enumerate(kinds):
            group.start_soon(one, index, kind)
    elapsed = time.perf_counter() - start
    return Result(label, len(kinds), sum(CALLS[kind] for kind in kinds), elapsed, tuple(errors))


# --------------------------------------------------------------------------------------------
# The same operations, blocking.


def _list(client: Client, base: Base, index: int) -> None:
    images = client.images.list()
    assert base.fingerprint in [image.fingerprint for image in images]


def _get(client: Client, base: Base, index: int) -> None:
    assert client.images.get(base.fingerprint[:12]).fingerprint == base.fingerprint


def _get_alias(client: Client, base: Base, index: int) -> None:
    assert client.images.get_alias(base.alias).target == base.fingerprint


def _alias(client: Client, base: Base, index: int) -> None:
    name = unique_alias()
    with base.lock:
        base.aliases.add(name)
    alias = client.images.create_alias(name, base.fingerprint[:16], description="load")
    assert alias.target == base.fingerprint
    client.images.delete_alias(name)
    with base.lock:
        base.aliases.discard(name)


def _create(client: Client, base: Base, index: int) -> None:
    image = client.images.create(unified_image(), wait=True)
    assert isinstance(image, Image)
    with base.lock:
        base.created.add(image.fingerprint)
    client.images.delete(image.fingerprint, wait=True)
    with base.lock:
        base.created.discard(image.fingerprint)


def _export(client: Client, base: Base, index: int) -> None:
    (path,) = client.images.export(base.fingerprint, base.workdir / f"thread-{index}.tar.gz")
    assert path.stat().st_size == base.size
    path.unlink()


OPERATIONS: dict[str, Callable[[Client, Base, int], None]] = {
    "list": _list,
    "get": _get,
    "get_alias": _get_alias,
    "alias": _alias,
    "create": _create,
    "export": _export,
}


def run_threads(
    client: Client, base: Base, operations: int, label: str, *, threads: int = 16
) -> Result:
    """Run the operations on a pool of threads that all share one blocking Client."""
    errors: list[str] = []
    kinds = plan(operations)
    # All threads start together, so that the client's first requests contend.
    ready = threading.Barrier(threads)

    def start_together() -> None:
        ready.wait(timeout=30)

    def one(index: int, kind: str) -> None:
        try:
            OPERATIONS[kind](client, base, index)
        except Exception as exc:
            errors.append(f"{kind} #{index}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads, initializer=start_together) as pool:
        list(pool.map(one, range(len(kinds)), kinds))
    elapsed = time.perf_counter() - start
    return Result(label, len(kinds), sum(CALLS[kind] for kind in kinds), elapsed, tuple(errors))


# --------------------------------------------------------------------------------------------
# Setting up and cleaning up (with a client of its own, so that the loaded one starts cold).


def make_base(client: Client, workdir: Path) -> Base:
    image = client.images.create(unified_image(), wait=True)
    assert isinstance(image, Image)
    alias = unique_alias()
    try:
        client.images.create_alias(alias, image.fingerprint, description="load base")
    except BaseException:
        client.images.delete(image.fingerprint, wait=True)
        raise
    return Base(fingerprint=image.fingerprint, size=image.size, alias=alias, workdir=workdir)


def clean_up(client: Client, base: Base) -> None:
    """Delete the base image and alias, and anything a failed operation left behind."""
    for name in [base.alias, *base.aliases]:
        with contextlib.suppress(NotFoundError):
            client.images.delete_alias(name)
    for fingerprint in [base.fingerprint, *base.created]:
        with contextlib.suppress(NotFoundError):
            client.images.delete(fingerprint, wait=True)


def daemon_state(client: Client) -> tuple[frozenset[str], frozenset[str]]:
    """(fingerprints, alias names) on the daemon: it must look the same after a run."""
    fingerprints = frozenset(client.images.list(recursion=0))
    aliases = frozenset(alias.name for image in client.images.list() for alias in image.aliases)
    return fingerprints, aliases


# --------------------------------------------------------------------------------------------
# The command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.load", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--calls", type=int, default=2000, help="operations per run")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--async-limit", type=int, default=None, help="most async calls in flight (default: all)"
    )
    parser.add_argument("--transport", default="unix,https")
    parser.add_argument("--flavour", default="async,threads")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)

    from throwaway_incusd import ThrowawayIncusd, make_client_certificate

    failed = False
    with (
        tempfile.TemporaryDirectory(prefix="incus-load-") as directory,
        ThrowawayIncusd() as daemon,
    ):
        url = daemon.enable_https()
        cert, key = make_client_certificate(directory, "load")
        daemon.trust(cert)
        endpoints = {
            "unix": (daemon.endpoint, {}),
            "https": (url, {"cert": (cert, key), "verify": daemon.server_certificate}),
        }
        workdir = Path(directory)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Client(daemon.endpoint) as admin:
                before = daemon_state(admin)
                base = make_base(admin, workdir)
                try:
                    for _round in range(args.rounds):
                        for transport in args.transport.split(","):
                            endpoint, options = endpoints[transport]
                            for flavour in args.flavour.split(","):
                                result = _run(flavour, transport, endpoint, options, base, args)
                                print(result, flush=True)
                                for error in result.errors[:10]:
                                    print(f"  {error}", flush=True)
                                failed = failed or bool(result.errors)
                finally:
                    clean_up(admin, base)
                after = daemon_state(admin)
            gc.collect()
        if after != before:
            print(f"the daemon was not left as it was: {before} -> {after}")
            failed = True
        for warning in caught:
            print(f"warning: {warning.category.__name__}: {warning.message}")
            failed = True
    print("FAILED" if failed else "OK")
    return 1 if failed else 0


def _run(
    flavour: str,
    transport: str,
    endpoint: str,
    options: dict[str, Any],
    base: Base,
    args: argparse.Namespace,
) -> Result:
    limit = f", at most {args.async_limit} at a time" if args.async_limit else ""
    label = f"async over {transport}{limit}"
    if flavour == "async":

        async def run() -> Result:
            async with AsyncClient(endpoint, **options) as client:
                return await run_async(client, base, args.calls, label, limit=args.async_limit)

        return anyio.run(run)
    with Client(endpoint, **options) as client:
        return run_threads(
            client,
            base,
            args.calls,
            f"{args.threads} threads over {transport}",
            threads=args.threads,
        )


if __name__ == "__main__":
    sys.exit(main())
