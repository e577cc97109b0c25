"""Progress of daemon-side operations from the event stream, on real daemons, in both flavours:
a copy with ``progress=`` hears its operation's updates on ``/1.0/events`` and asks the
daemon far less than polling did (two requests a second).

The daemons are the session's ``copy_servers`` (source and target on loopback HTTPS, trusting
the client certificate); a slow download comes from the source behind a proxy that paces its
answers to a few hundred KiB a second (``tests/paced_proxy.py``). Requests are counted from
the SDK's DEBUG log (one line per request, see ``_logging``). Publish runs on the session's
``container_host`` (its fixtures come from the publish tests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tiny_image import split_image

from incus_images import AsyncClient, Image
from tests._async import test_daemon_filters_aliases_updates_publish as publish_tests
from tests.helpers import UNIX_BASE, stored_fingerprints
from tests.paced_proxy import PacedProxy

pytestmark = pytest.mark.anyio

#: The publish tests' fixtures: a client of the session's container host, and a stopped
#: busybox container on it (deleted afterwards, with what was published of it).
publish_host_client = publish_tests.host_client
publish_instance = publish_tests.instance

#: The pace of the source's answers, and the size of the image's rootfs: a download of about
#: five seconds, during which polling would have sent about ten requests. incusd reports a
#: pull's progress once a second.
PACE = 400 * 1024
ROOTFS_BYTES = 2 * 1024 * 1024


@pytest.fixture
def target_raw(copy_servers: Any) -> Iterator[httpx.Client]:
    """Plain httpx on the target's socket; the images on it are deleted after the test."""
    client = httpx.Client(
        transport=httpx.HTTPTransport(uds=copy_servers.target.socket_path),
        base_url=UNIX_BASE,
        timeout=60,
    )
    try:
        yield client
    finally:
        for fingerprint in stored_fingerprints(client):
            response = client.delete(f"/1.0/images/{fingerprint}")
            if response.status_code == 202:
                client.get(f"{response.json()['operation']}/wait", params={"timeout": "30"})
        client.close()


def https_client(daemon: Any, certificates: Any) -> AsyncClient:
    cert = (certificates.client_cert, certificates.client_key)
    return AsyncClient(daemon.https_url, cert=cert, verify=daemon.server_certificate)


@pytest.fixture
async def source(copy_servers: Any) -> AsyncIterator[AsyncClient]:
    async with https_client(copy_servers.source, copy_servers.certificates) as client:
        yield client


@pytest.fixture
async def target(copy_servers: Any, target_raw: httpx.Client) -> AsyncIterator[AsyncClient]:
    async with https_client(copy_servers.target, copy_servers.certificates) as client:
        yield client


def requests_sent(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Each request the SDK sent, as "METHOD /path", from its DEBUG log."""
    return [
        f"{record.args[0]} {record.args[1]}"
        for record in caplog.records
        if record.funcName == "log_answer" and isinstance(record.args, tuple)
    ]


def about_operations(requests: list[str]) -> list[str]:
    return [line for line in requests if "/1.0/operations/" in line or "/1.0/events" in line]


@pytest.fixture
async def paced_source(copy_servers: Any) -> AsyncIterator[AsyncClient]:
    """The source daemon behind a proxy that paces what it sends: the target's download from
    it (a pull) lasts seconds."""
    port = int(copy_servers.source.https_url.rsplit(":", 1)[1])
    with PacedProxy(("127.0.0.1", port), bytes_per_second=PACE) as proxy:
        certificates = copy_servers.certificates
        cert = (certificates.client_cert, certificates.client_key)
        verify = copy_servers.source.server_certificate
        async with AsyncClient(proxy.url, cert=cert, verify=verify) as client:
            yield client


async def test_a_slow_pull_reports_progress_from_events_with_few_requests(
    paced_source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Polling would have sent two requests a second; the stream costs three in all."""
    metadata, rootfs = split_image(payload_size=ROOTFS_BYTES)
    original = await paced_source.images.create(metadata, rootfs=rootfs, public=True, wait=True)
    assert isinstance(original, Image)
    caplog.set_level(logging.DEBUG, logger="incus_images")
    calls: list[tuple[int, int | None]] = []
    try:
        started = time.monotonic()
        copied = await target.images.copy(
            original.fingerprint,
            paced_source,
            mode="pull",
            progress=lambda *call: calls.append(call),
        )
        elapsed = time.monotonic() - started
        assert isinstance(copied, Image) and copied.fingerprint == original.fingerprint
        waiting = about_operations(requests_sent(caplog))
    finally:
        await paced_source.images.delete(original.fingerprint, wait=True)
    print(f"\n{elapsed:.1f} s, {len(calls)} progress calls, requests while waiting: {waiting}")
    assert elapsed >= 2
    assert waiting[0] == "GET /1.0/events"
    assert len(waiting) == 3, waiting
    assert calls[0] == (0, original.size)
    assert calls[-1] == (original.size, original.size)
    between = [done for done, _ in calls if 0 < done < original.size]
    assert len(between) >= 2, calls
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


@pytest.mark.parametrize("mode", ["pull", "push"])
async def test_a_copy_between_daemons_follows_the_operation_on_its_stream(
    source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """Over HTTPS with a client certificate: the stream of the daemon that runs the
    operation (the target in a pull, the source in a push)."""
    metadata, rootfs = split_image(payload_size=256 * 1024)
    original = await source.images.create(metadata, rootfs=rootfs, public=True, wait=True)
    assert isinstance(original, Image)
    caplog.set_level(logging.DEBUG, logger="incus_images")
    calls: list[tuple[int, int | None]] = []
    try:
        copied = await target.images.copy(
            original.fingerprint, source, mode=mode, progress=lambda *call: calls.append(call)
        )
        assert isinstance(copied, Image) and copied.fingerprint == original.fingerprint
        waiting = about_operations(requests_sent(caplog))
    finally:
        await source.images.delete(original.fingerprint, wait=True)
    assert waiting[0] == "GET /1.0/events"
    assert len([line for line in waiting if line.endswith("/wait")]) == 1, waiting
    assert calls[0] == (0, original.size)
    assert calls[-1] == (original.size, original.size)


async def test_publish_follows_its_operation_on_the_stream(
    publish_host_client: AsyncClient, publish_instance: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="incus_images")
    calls: list[tuple[int, int | None]] = []
    image = await publish_host_client.images.publish(
        publish_instance, compression="none", progress=lambda *call: calls.append(call)
    )
    assert isinstance(image, Image)
    waiting = about_operations(requests_sent(caplog))
    assert waiting[0] == "GET /1.0/events"
    assert len([line for line in waiting if line.endswith("/wait")]) == 1, waiting
    assert calls[0] == (0, None) and calls[-1] == (image.size, image.size)
