"""The event stream across a daemon restart (issue 18), in both flavours, each test on a daemon
of its own (restarting the session's would disturb other tests).

incusd 6.0.4 ends every event stream without a close frame when it stops (SIGTERM): the socket
just ends. The stream then reopens and says what may have been missed with an EventGap; with
``reconnect=False`` the drop is an IncusConnectionError; with the daemon kept down, the stream
gives up after about the client's timeout.

Changes after the restart are made by a thread (``AliasMaker``), alias after alias, until the
test has heard one: the blocking flavour reopens the stream only when it is asked for the next
event, and incusd replays nothing made before a stream opens.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import pytest
from throwaway_incusd import ThrowawayIncusd, unix_request
from tiny_image import unified_image

from incus_images import AsyncClient, EventGap, Image, ImageEvent, IncusConnectionError
from tests._async.test_daemon_events import alias_created, read_until
from tests.helpers import unique

pytestmark = [pytest.mark.anyio, pytest.mark.incusd]  # starts daemons of its own


class AliasMaker:
    """A thread that creates aliases ``<prefix>-0``, ``-1``, ... of one image over a daemon's
    unix socket, one every ``every`` seconds, until the block is left; failures (the daemon
    is down) are only counted."""

    def __init__(self, socket_path: str, fingerprint: str, *, every: float = 0.2) -> None:
        self.prefix = unique("after")
        self._socket_path = socket_path
        self._fingerprint = fingerprint
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.made: list[str] = []
        self.failed = 0
        self.last_failure = ""

    def made_by_me(self, event: Any) -> bool:
        return (
            isinstance(event, ImageEvent)
            and event.action == "image-alias-created"
            and event.alias is not None
            and event.alias.startswith(self.prefix + "-")
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            name = f"{self.prefix}-{len(self.made)}"
            try:
                status, answer = unix_request(
                    self._socket_path,
                    "POST",
                    "/1.0/images/aliases",
                    {"name": name, "target": self._fingerprint},
                )
            except Exception as exc:  # the daemon is down or half up: try again
                status, answer = 0, {"error": repr(exc)}
            if status in (200, 201):
                self.made.append(name)
            else:
                self.failed += 1
                self.last_failure = f"{status} {answer.get('error')}"
            self._stop.wait(self._every)

    def __enter__(self) -> AliasMaker:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture
def restartable() -> Iterator[ThrowawayIncusd]:
    with ThrowawayIncusd() as daemon:
        yield daemon


async def _image(client: AsyncClient) -> str:
    image = await client.images.create(unified_image(), wait=True)
    assert isinstance(image, Image)
    return image.fingerprint


async def test_a_restart_mid_stream_is_a_gap_then_events_again(
    restartable: ThrowawayIncusd,
) -> None:
    async with AsyncClient(restartable.endpoint) as client:
        fingerprint = await _image(client)
        before = unique("before")
        async with client.images.watch() as changes:
            await client.images.create_alias(before, fingerprint)
            assert (await read_until(changes, alias_created(before)))[-1].alias == before
            restart_began = datetime.now(UTC)
            started = time.monotonic()
            restartable.restart()
            restarted = datetime.now(UTC)
            with AliasMaker(restartable.socket_path, fingerprint) as maker:
                seen = await read_until(changes, maker.made_by_me)
            heard_after = time.monotonic() - started
        print(
            f"\nrestart: daemon back in {(restarted - restart_began).total_seconds():.2f} s, "
            f"an event heard {heard_after:.2f} s after the restart began; "
            f"gap {seen[0]!r}; {maker.failed} changes failed meanwhile {maker.last_failure}"
        )
    gap = seen[0]
    assert isinstance(gap, EventGap), seen
    assert gap.since.tzinfo is UTC and gap.until.tzinfo is UTC
    # From the last event read on the old stream to the opening of the new one.
    assert gap.since <= restart_began <= restarted <= gap.until
    assert [event for event in seen if isinstance(event, EventGap)] == [gap]
    assert maker.made_by_me(seen[-1])


async def test_without_reconnect_a_restart_raises(restartable: ThrowawayIncusd) -> None:
    async with AsyncClient(restartable.endpoint) as client:
        fingerprint = await _image(client)
        before = unique("before")
        async with client.events(types=("lifecycle",), reconnect=False) as events:
            await client.images.create_alias(before, fingerprint)
            await read_until(events, alias_created(before))
            restartable.restart()
            # Nothing else happened on the daemon: the next step meets the drop.
            with pytest.raises(IncusConnectionError) as caught:
                await anext(events)
            # The stream stays ended.
            with pytest.raises(StopAsyncIteration):
                await anext(events)
    assert "reconnect=False" in str(caught.value)
    assert restartable.endpoint in str(caught.value)


async def test_a_daemon_kept_down_ends_the_stream_within_the_timeout(
    restartable: ThrowawayIncusd,
) -> None:
    timeout = 2.0
    async with (
        AsyncClient(restartable.endpoint, timeout=timeout) as client,
        client.images.watch() as changes,
    ):
        assert restartable.process is not None
        restartable.process.terminate()  # by its own PID; not started again
        restartable.process.wait(30)
        started = time.monotonic()
        with pytest.raises(IncusConnectionError) as caught:
            await anext(changes)
        took = time.monotonic() - started
    print(f"\ndaemon kept down: the stream gave up after {took:.2f} s (timeout={timeout:g})")
    assert "could not be opened again within 2 s" in str(caught.value)
    # It tried for about the timeout, not once, and gave up within it (plus slack for a slow
    # machine).
    assert timeout / 2 <= took <= timeout + 1.5
