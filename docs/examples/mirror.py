"""Mirror the images of one Incus server to another, as they are created.

An asyncio service built on incus_images (docs/events.md): it watches the source server's
images (``source.images.watch()``) and copies each new one to the target
(``target.images.copy(fingerprint, source)``). The target ends up holding every image of the
source's project; aliases are not mirrored, and nothing is ever deleted on the target.

What it does about what the event stream cannot promise:

* At start, and on every ``EventGap`` (the stream was lost and opened again: a daemon restart,
  a cluster member lost, a watcher dropped), it lists both servers and copies what the target
  is missing: whatever happened in between is caught up.
* ``image-refreshed`` (and the ``image-created`` before it) name the image a refresh
  *replaced*, not the new one: a refresh triggers the same comparison.
* The watcher only hands fingerprints to the copying task and goes on reading, so it answers
  the server's pings while a big image is copied; were the copies to fall far behind (the
  queue holds at most ``QUEUE_SIZE``), the watcher waits, the server may drop it, and the gap
  that follows brings a comparison.
* A copy that fails is logged and left to the next comparison (``--resync`` seconds at most).

SIGINT or SIGTERM stops it cleanly (exit status 0): the stream is closed and the wait for a
copy under way is interrupted (no partial image is left; a pull the target had started may
still complete on its own). A source that cannot be reached again within the client's
``--timeout`` ends it with exit status 1.

Run it::

    python docs/examples/mirror.py local backup          # two remotes of the incus CLI
    python docs/examples/mirror.py unix:///var/lib/incus/unix.socket \\
        https://backup.example:8443 --cert client.crt --key client.key --target-verify b.crt
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from incus_images import (
    AsyncClient,
    EventGap,
    IncusError,
    InvalidInputError,
    NotFoundError,
)

log = logging.getLogger("mirror")

#: Images waiting to be copied: fingerprints, or None for "compare both servers".
QUEUE_SIZE = 1000


class Mirror:
    """Copies every image of source that target lacks, as the source's events announce them."""

    def __init__(
        self, source: AsyncClient, target: AsyncClient, *, copy_timeout: float | None
    ) -> None:
        self.source = source
        self.target = target
        self.copy_timeout = copy_timeout
        self.work: asyncio.Queue[str | None] = asyncio.Queue(QUEUE_SIZE)

    async def watch(self) -> None:
        """Hand each new image of the source to the copier; a comparison on a gap."""
        async with self.source.images.watch() as changes:
            log.info("watching %s", self.source.server)
            # What was created before the stream opened: compare once now.
            await self.work.put(None)
            async for change in changes:
                if isinstance(change, EventGap):
                    log.warning(
                        "events from %s to %s may have been missed: comparing the servers",
                        change.since.isoformat(timespec="seconds"),
                        change.until.isoformat(timespec="seconds"),
                    )
                    await self.work.put(None)
                elif change.action == "image-created" and change.fingerprint is not None:
                    log.info("heard image-created %s", change.fingerprint[:12])
                    await self.work.put(change.fingerprint)
                elif change.action == "image-refreshed":
                    # The event names the image that was replaced; the new one is unnamed.
                    await self.work.put(None)

    async def copy_all(self) -> None:
        """Copy what the watcher hands over, one image at a time."""
        while True:
            item = await self.work.get()
            if item is None:
                await self.compare()
            else:
                await self.copy(item)

    async def resync_every(self, seconds: float) -> None:
        """A comparison every so often: it retries the copies that failed."""
        while True:
            await asyncio.sleep(seconds)
            await self.work.put(None)

    async def compare(self) -> None:
        """Copy every image of the source that the target does not hold."""
        try:
            wanted = set(await self.source.images.list(recursion=0))
            held = set(await self.target.images.list(recursion=0))
        except IncusError as exc:
            log.warning("could not list the images to compare (retried later): %s", exc)
            return
        missing = sorted(wanted - held)
        log.info("%d image(s) of the source missing on the target", len(missing))
        for fingerprint in missing:
            await self.copy(fingerprint)

    async def copy(self, fingerprint: str) -> None:
        try:
            # An image the target already holds is returned as it is, not copied again.
            await self.target.images.copy(fingerprint, self.source, timeout=self.copy_timeout)
        except NotFoundError:
            log.info("image %s is gone from the source: not copied", fingerprint[:12])
        except IncusError as exc:
            # The message names the image, both servers and the mode; no secret is in it.
            log.warning("could not copy image %s (retried later): %s", fingerprint[:12], exc)
        else:
            log.info("copied image %s", fingerprint[:12])


def client_for(name: str, arguments: argparse.Namespace, verify: str | None) -> AsyncClient:
    """A client of a remote of the incus CLI, or of an endpoint (a unix socket, https://)."""
    timeout = arguments.timeout
    if name.startswith("https://"):
        cert = (arguments.cert, arguments.key) if arguments.cert else None
        return AsyncClient(name, cert=cert, verify=verify or True, timeout=timeout)
    if name.startswith(("unix:", "/")):
        return AsyncClient(name, timeout=timeout)
    return AsyncClient(remote=name, timeout=timeout)


async def run(arguments: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    source = client_for(arguments.source, arguments, arguments.source_verify)
    target = client_for(arguments.target, arguments, arguments.target_verify)
    failures: list[BaseException] = []
    async with source, target:
        mirror = Mirror(source, target, copy_timeout=arguments.copy_timeout)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(mirror.watch()),
                    group.create_task(mirror.copy_all()),
                    group.create_task(mirror.resync_every(arguments.resync)),
                ]
                # A task that fails cancels this wait, and the group raises what it raised.
                await stop.wait()
                log.info("stopping")
                for task in tasks:
                    task.cancel()
        except* IncusError as group:
            failures.extend(group.exceptions)
    for failure in failures:
        log.error("%s", failure)
    if failures:
        return 1
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Copy every new image of the SOURCE Incus server to the TARGET one, as it is "
            "created, and what the target lacks at start and after a lost connection. "
            "SIGINT or SIGTERM stops it."
        ),
        epilog=(
            "SOURCE and TARGET are each a remote of the incus CLI (local, ...), a unix socket "
            "(unix:///var/lib/incus/unix.socket or a path) or https://host[:port]."
        ),
    )
    parser.add_argument("source", metavar="SOURCE", help="the server whose images are copied")
    parser.add_argument("target", metavar="TARGET", help="the server they are copied to")
    parser.add_argument("--cert", help="client certificate (PEM) for https:// servers")
    parser.add_argument("--key", help="its private key (PEM)")
    parser.add_argument("--source-verify", metavar="PEM", help="the source's certificate")
    parser.add_argument("--target-verify", metavar="PEM", help="the target's certificate")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a call may take (default: 30)"
    )
    parser.add_argument(
        "--copy-timeout",
        type=float,
        default=3600.0,
        help="seconds one image's copy may take (default: 3600)",
    )
    parser.add_argument(
        "--resync",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="compare the servers this often, to retry failed copies (default: 3600)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log the SDK's requests and transfers too"
    )
    arguments = parser.parse_args(argv)
    if (arguments.cert is None) != (arguments.key is None):
        parser.error("--cert and --key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if not arguments.verbose:
        # This service's own lines; of the SDK and httpx, only warnings (a retry, a failover).
        logging.getLogger("incus_images").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(run(arguments))
    except InvalidInputError as exc:  # a SOURCE or TARGET the SDK refuses, named in exc
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
