"""Load: 200 concurrent async calls on one AsyncClient, and 16 threads sharing one blocking
Client, against the session's throwaway daemon over its unix socket and over HTTPS.

Every call must succeed, no warning may be raised (ResourceWarning for an unclosed socket
included: the clients are closed and garbage collected inside the test), and the daemon is left
as it was found. The throughput is printed (``pytest -s``) and recorded in the test's report
(``record_property``). The workload lives in ``tests/load.py``, which runs it longer
(``python -m tests.load``).
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from incus_images import AsyncClient, Client, IncusError
from tests.load import Base, Result, clean_up, make_base, run_async, run_threads

pytestmark = pytest.mark.incusd

#: Operations per run: 200 concurrent calls (alias and create operations make two each).
OPERATIONS = 200
THREADS = 16


def client_options(request: pytest.FixtureRequest, transport: str) -> tuple[str, dict[str, Any]]:
    if transport == "unix":
        return request.getfixturevalue("incusd").endpoint, {}
    https = request.getfixturevalue("https_server")
    return https.url, {
        "cert": (https.client_cert, https.client_key),
        "verify": https.server_cert,
    }


def daemon_state(raw_api: httpx.Client) -> tuple[list[str], list[str]]:
    images = raw_api.get("/1.0/images").json()["metadata"]
    aliases = raw_api.get("/1.0/images/aliases").json()["metadata"]
    return sorted(images), sorted(aliases)


@pytest.fixture
def base(incusd: Any, raw_api: httpx.Client, tmp_path: Path) -> Iterator[Base]:
    """The image and alias the run reads (made with a client of its own, so that the loaded
    client starts cold); afterwards, everything is deleted and the daemon is as it was."""
    before = daemon_state(raw_api)
    with Client(incusd.endpoint) as admin:
        made = make_base(admin, tmp_path)
        try:
            yield made
        finally:
            clean_up(admin, made)
    assert daemon_state(raw_api) == before, "the load run left images or aliases behind"
    assert list(tmp_path.iterdir()) == [], "exports were left behind"


def report(result: Result, record_property: Callable[[str, object], None]) -> None:
    print(f"\nload: {result}")
    record_property("load", str(result))
    record_property("calls_per_second", round(result.calls_per_second, 1))
    record_property("calls", result.calls)
    record_property("errors", len(result.errors))


def assert_clean(result: Result, caught: list[warnings.WarningMessage]) -> None:
    assert result.errors == (), "\n".join(result.errors[:20])
    assert result.operations == OPERATIONS
    messages = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught]
    assert messages == [], "\n".join(messages)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["unix", "https"])
async def test_200_concurrent_async_calls_on_one_client(
    request: pytest.FixtureRequest,
    transport: str,
    base: Base,
    record_property: Callable[[str, object], None],
) -> None:
    endpoint, options = client_options(request, transport)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with AsyncClient(endpoint, **options) as client:
            result = await run_async(client, base, OPERATIONS, f"async over {transport}")
        del client
        gc.collect()  # an unclosed socket or file shows up as a ResourceWarning here
    report(result, record_property)
    assert_clean(result, caught)


@pytest.mark.parametrize("transport", ["unix", "https"])
def test_16_threads_sharing_one_blocking_client(
    request: pytest.FixtureRequest,
    transport: str,
    base: Base,
    record_property: Callable[[str, object], None],
) -> None:
    endpoint, options = client_options(request, transport)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Client(endpoint, **options) as client:
            result = run_threads(
                client, base, OPERATIONS, f"{THREADS} threads over {transport}", threads=THREADS
            )
        del client
        gc.collect()
    report(result, record_property)
    assert_clean(result, caught)


@pytest.mark.anyio
async def test_calls_queued_behind_the_clients_own_calls_are_not_timed_out(
    incusd: Any, base: Base
) -> None:
    """400 calls on one client take several seconds together (httpcore's async pool slows
    down with many waiters); each must be timed from its own first network step, not from
    when it joined the queue. (The timeout leaves room for an event loop that busy.)"""
    errors: list[IncusError] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with AsyncClient(incusd.endpoint, timeout=2.0) as client:

            async def one(client: AsyncClient) -> None:
                try:
                    await client.images.get_alias(base.alias)
                except IncusError as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as group:
                for _ in range(400):
                    group.start_soon(one, client)
        del client
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert errors == [], f"{len(errors)} of 400 calls failed, e.g.: {errors[0]}"
