"""docs/examples/mirror.py, the events page's example service, runs between two throwaway daemons.

It is started as a user would start it, on the two daemons' unix sockets (so it relays), with
an image already on the source that the target lacks: that one is copied at start. Once it
says it is watching, an image is created on the source: it must reach the target because the
example heard its ``image-created`` event. Then the signal a service manager sends stops it,
with exit status 0, within a few seconds. The same over HTTPS, where the target pulls. And an
image created while the example is frozen and its source restarts (no event of it ever
reaches the example) is copied when the example wakes to the gap; a source gone for good ends
it with status 1 once its timeout has passed. Outcomes are read behind the SDK's back.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from throwaway_incusd import ThrowawayIncusd
from tiny_image import unified_image

from tests.helpers import UNIX_BASE, stored_fingerprints, wait_raw

MIRROR = Path(__file__).resolve().parent.parent / "docs" / "examples" / "mirror.py"
#: How long an image may take to reach the target, and the example to stop once signalled.
COPY_SECONDS = 60
STOP_SECONDS = 10


def _raw(daemon: Any) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=daemon.socket_path), base_url=UNIX_BASE, timeout=60
    )


@pytest.fixture
def raws(copy_servers: Any) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """Plain httpx on the source and the target; both are left without images."""
    clients = (_raw(copy_servers.source), _raw(copy_servers.target))
    try:
        yield clients
    finally:
        for client in clients:
            for fingerprint in stored_fingerprints(client):
                response = client.delete(f"/1.0/images/{fingerprint}")
                if response.status_code == 202:
                    wait_raw(client, response)
            client.close()


def _create(raw: httpx.Client) -> str:
    response = raw.post(
        "/1.0/images",
        content=unified_image(),
        headers={"Content-Type": "application/octet-stream"},
    )
    return str(wait_raw(raw, response)["metadata"]["fingerprint"])


class _Lines:
    """The example's log (stderr), line by line, read on a thread so that the pipe never
    fills up and a line can be waited for with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for(self, fragment: str, seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if fragment in line:
                return line
        pytest.fail(f"the example never logged {fragment!r}:\n" + "\n".join(self.seen))

    def rest(self) -> str:
        """The whole log, once the example has ended."""
        self._thread.join(timeout=STOP_SECONDS)
        while not self._lines.empty():
            line = self._lines.get_nowait()
            if line is not None:
                self.seen.append(line)
        return "\n".join(self.seen)


def _wait_until_held(raw: httpx.Client, fingerprint: str) -> None:
    deadline = time.monotonic() + COPY_SECONDS
    while fingerprint not in stored_fingerprints(raw):
        assert time.monotonic() < deadline, f"{fingerprint[:12]} never reached the target"
        time.sleep(0.1)


@contextlib.contextmanager
def _mirror(*arguments: str, timeout: float = 10) -> Iterator[tuple[subprocess.Popen[str], _Lines]]:
    """The example running with these arguments; killed at the end if it is still running."""
    command = [sys.executable, str(MIRROR), *arguments, "--timeout", str(timeout)]
    # As a context manager, Popen closes the pipe once the example has ended.
    with subprocess.Popen(
        command,
        env=os.environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            yield process, _Lines(process.stderr)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _stop(process: subprocess.Popen[str], log: _Lines, signum: signal.Signals) -> str:
    """Send the signal; the example must end with status 0 within STOP_SECONDS."""
    process.send_signal(signum)
    started = time.monotonic()
    status = process.wait(timeout=STOP_SECONDS)
    stopped_in = time.monotonic() - started
    text = log.rest()
    assert status == 0, text
    assert stopped_in < STOP_SECONDS
    assert "stopping" in text
    assert "Traceback" not in text
    assert "ERROR" not in text
    return text


def _arguments(copy_servers: Any, transport: str) -> list[str]:
    """The two daemons' unix sockets (a relay), or their HTTPS addresses (a pull: the target
    downloads from the source), with the client certificate and both server certificates."""
    source, target = copy_servers.source, copy_servers.target
    if transport == "unix":
        return [source.endpoint, target.endpoint]
    certificates = copy_servers.certificates
    return [
        source.https_url,
        target.https_url,
        "--cert",
        certificates.client_cert,
        "--key",
        certificates.client_key,
        "--source-verify",
        source.server_certificate,
        "--target-verify",
        target.server_certificate,
    ]


@pytest.mark.parametrize(
    ("transport", "signum"),
    [("unix", signal.SIGTERM), ("https", signal.SIGINT)],
    ids=["unix-relay-SIGTERM", "https-pull-SIGINT"],
)
def test_the_mirror_copies_new_images_and_stops_on_a_signal(
    copy_servers: Any,
    raws: tuple[httpx.Client, httpx.Client],
    transport: str,
    signum: signal.Signals,
) -> None:
    source, target = raws
    before = _create(source)
    assert before not in stored_fingerprints(target)

    with _mirror(*_arguments(copy_servers, transport)) as (process, log):
        log.wait_for("watching", COPY_SECONDS)
        # The image the source held at start: copied by the first comparison.
        _wait_until_held(target, before)

        created = _create(source)
        log.wait_for(f"heard image-created {created[:12]}", COPY_SECONDS)
        _wait_until_held(target, created)
        log.wait_for(f"copied image {created[:12]}", COPY_SECONDS)
        _stop(process, log, signum)
    # Everything on the target came from the source: nothing else was made there.
    assert stored_fingerprints(target) == {before, created}


@pytest.fixture
def restartable() -> Iterator[ThrowawayIncusd]:
    """A source of this test's own: restarting the session's daemons would disturb others."""
    with ThrowawayIncusd() as daemon:
        yield daemon


def test_what_the_stream_missed_is_copied_after_the_gap(
    restartable: ThrowawayIncusd, copy_servers: Any, raws: tuple[httpx.Client, httpx.Client]
) -> None:
    """The example frozen (SIGSTOP) while its source restarts and gets a new image: no event
    of that image ever reaches it, and the gap it sees on waking brings the image over."""
    _, target = raws
    with _mirror(restartable.endpoint, copy_servers.target.endpoint) as (process, log):
        log.wait_for("watching", COPY_SECONDS)
        log.wait_for("missing on the target", COPY_SECONDS)  # the first comparison is done
        process.send_signal(signal.SIGSTOP)
        try:
            restartable.restart()
            with _raw(restartable) as source:
                missed = _create(source)
        finally:
            process.send_signal(signal.SIGCONT)
        log.wait_for("may have been missed", COPY_SECONDS)
        _wait_until_held(target, missed)
        log.wait_for(f"copied image {missed[:12]}", COPY_SECONDS)
        text = _stop(process, log, signal.SIGTERM)
    assert f"heard image-created {missed[:12]}" not in text
    assert stored_fingerprints(target) == {missed}


def test_a_source_gone_for_good_ends_it_with_status_1(
    restartable: ThrowawayIncusd, copy_servers: Any
) -> None:
    """The stream cannot be opened again within the client's timeout: the example says why
    and exits 1 (a service manager restarts it), rather than wait for ever."""
    timeout = 3
    with _mirror(restartable.endpoint, copy_servers.target.endpoint, timeout=timeout) as (
        process,
        log,
    ):
        log.wait_for("watching", COPY_SECONDS)
        restartable.stop()
        status = process.wait(timeout=timeout + STOP_SECONDS)
    text = log.rest()
    assert status == 1, text
    (failure,) = [line for line in text.splitlines() if " ERROR " in line]
    assert "could not be opened again within 3 s" in failure
    assert "Traceback" not in text
