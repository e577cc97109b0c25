"""Driving the transfer room's pieces over the wire: upload bodies and export bodies.

The transfer room (``_transfer/``) decides what goes out and what came in; these loops move
the bytes, hand the slow work (hashing, writing) to worker threads when it falls behind, and
are the only place where the two flavours wait differently (``async_flavour.run_blocking``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from .._errors import LeftBehind
from .._flavours import async_flavour
from .._logging import logger
from .._protocol import Call, record_interruption, transport_error
from .._transfer.export import ExportReader, ExportReceiver
from .._transfer.meter import UploadMeter
from .._transfer.plan import Segment, UploadPlan
from .._transfer.relay import RelayFraming
from .._transfer.sources import chunk_bytes, read_chunks, reading
from ._connection import AsyncConnection


async def upload_body(plan: UploadPlan, meter: UploadMeter) -> AsyncIterator[bytes]:
    """The request body of an upload, produced chunk by chunk as httpx sends it.

    The last chunk is known before it goes: once it is handed over, an interruption can no
    longer tell whether the server got the whole image (``meter.body_handed``).
    """
    held: bytes | None = None
    async for out in _metered(plan, meter):
        if held is not None:
            yield held
        held = out
    meter.body_handed = True
    if held is not None:
        yield held


async def _metered(plan: UploadPlan, meter: UploadMeter) -> AsyncIterator[bytes]:
    for segment in plan.segments:
        if segment.source is None:
            yield segment.framing
            continue
        meter.start(segment)
        async for chunk in _source_chunks(segment):
            if out := meter.take(chunk):
                yield out
            if meter.backlogged:
                await async_flavour.run_blocking(meter.wait_for_room)
        if out := meter.end(segment):
            yield out


async def _source_chunks(segment: Segment) -> AsyncIterator[bytes]:
    source = segment.source
    assert source is not None
    if source.kind == "async_iterable":
        with reading(source, segment.argument):
            async for chunk in source.value:
                yield chunk_bytes(chunk, segment.argument)
    elif source.kind == "build":
        # A build reads a whole tree: each chunk is made on a worker thread, not in the
        # event loop (the blocking flavour makes it in place).
        chunks = read_chunks(source, segment.argument)
        try:
            while (
                chunk := await async_flavour.run_blocking(lambda: next(chunks, None))
            ) is not None:
                yield chunk
        finally:
            chunks.close()
    else:
        for chunk in read_chunks(source, segment.argument):
            yield chunk


class RelayState:
    """How far a relay got: whether its last bytes were handed to the HTTP client (then the
    target may have the whole image)."""

    handed = False


async def relay_body(
    connection: AsyncConnection,
    call: Call,
    response: httpx.Response,
    reader: ExportReader,
    framing: RelayFraming,
    state: RelayState,
) -> AsyncIterator[bytes]:
    """The upload body of a relay, read from the source's export as the target takes it.

    The last bytes go out only once the whole export was verified (``reader.finish()``): a
    failed check aborts the upload before the receiving server has the complete image.
    """
    reader.start()
    try:
        async for chunk in connection.body(call, response):
            for event in reader.feed(chunk):
                for out in framing.take(event):
                    yield out if isinstance(out, bytes) else bytes(out)
            if reader.backlogged:
                await async_flavour.run_blocking(reader.wait_for_room)
    except httpx.TransportError as exc:
        # Raised inside the target's request: mapped here, or it would blame the target.
        raise transport_error(call, connection.server, exc) from exc
    reader.finish()
    logger.debug("%s on %s: %d bytes verified", call.action, connection.server, reader.received)
    # Reported before the last bytes: once they are sent, the target has the whole image and
    # a callback that raises could no longer stop it.
    reader.progress.finish()
    state.handed = True
    yield framing.end()


async def receive_export(
    connection: AsyncConnection,
    call: Call,
    receiver_for: Callable[[httpx.Response], ExportReceiver],
    *,
    interruption: Callable[[int], str],
) -> list[Path]:
    """Send the export request and feed its body into the receiver ``receiver_for(response)``
    makes; return the files placed.

    Whatever stops it once the answer is there, nothing is written: a failure of the SDK's
    own checks says so already, and anything else that cuts the transfer short (a lost
    connection, Ctrl-C, a cancelled task) gets the record, with the sentence
    ``interruption(bytes_received)``.
    """
    receiver: ExportReceiver | None = None
    started = time.monotonic()
    try:
        async with connection.stream(call) as response:
            receiver = receiver_for(response)
            receiver.start()
            async for chunk in connection.body(call, response):
                receiver.feed(chunk)
                if receiver.backlogged:
                    await async_flavour.run_blocking(receiver.wait_for_room)
            receiver.verify()
        # Placed only once the response is closed: closing may still deliver an interruption
        # (an async cancellation is raised at the next await), which must leave nothing.
        placed = receiver.place()
    except BaseException as exc:
        if receiver is None:
            raise
        record_interruption(
            exc, LeftBehind.NOTHING, interruption(receiver.received), any_error=True
        )
        raise
    finally:
        if receiver is not None:
            receiver.discard()
    logger.info(
        "%s on %s: %d bytes verified and renamed into place in %.1f s",
        call.action,
        connection.server,
        receiver.received,
        time.monotonic() - started,
    )
    return placed
