"""Work beside the I/O: chunks handed, in order, to a consumer on a worker thread.

SHA-256 costs about a second of CPU per GiB, as much as moving the bytes. hashlib releases the
GIL on large updates, so :class:`Hasher` runs it on a worker thread while the transfer goes on;
a bounded backlog keeps memory constant when the hash is the slower side.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable

__all__ = ["CHUNK_SIZE", "ChunkWorker", "Hasher"]

#: Bytes read from a local source per chunk of an upload.
CHUNK_SIZE = 1024 * 1024


class ChunkWorker:
    """Hands chunks, in order, to a consumer on a thread of its own.

    Hashing and file writes release the GIL, so a consumer on a worker thread runs beside the
    thread that receives or sends. Chunks must not change once handed over (bytes, or views
    of bytes). Small streams are consumed inline: the thread starts only once a stream passes
    ``inline_limit``. Chunks go over in batches of about CHUNK_SIZE; when more than ``backlog``
    bytes wait, ``backlogged`` turns true and the producer should call ``wait_for_room()``
    (from a worker thread, in async code), so memory stays bounded. A failure of the consumer
    is raised from the next ``put()`` or from ``drain()``.
    """

    def __init__(
        self,
        consume: Callable[[list[bytes | memoryview]], object],
        name: str,
        *,
        inline_limit: int = 4 * CHUNK_SIZE,
        backlog: int = 8 * CHUNK_SIZE,
    ) -> None:
        self._consume = consume
        self._name = name
        self._inline_limit = inline_limit
        self._backlog_limit = backlog
        self._seen = 0
        self._batch: list[bytes | memoryview] = []
        self._batch_size = 0
        self._waiting = 0
        self._room = threading.Condition()
        self._work: queue.SimpleQueue[list[bytes | memoryview] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def put(self, data: bytes | memoryview) -> None:
        if self._failure is not None:
            raise self._failure
        size = len(data)
        if not size:
            return
        self._seen += size
        if self._thread is None and self._seen <= self._inline_limit:
            self._consume([data])
            return
        self._batch.append(data)
        self._batch_size += size
        if self._batch_size >= CHUNK_SIZE:
            self._submit()

    def _submit(self) -> None:
        if not self._batch:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name)
            self._thread.daemon = True  # never keeps the interpreter alive after an abort
            self._thread.start()
        with self._room:
            self._waiting += self._batch_size
        self._work.put(self._batch)
        self._batch, self._batch_size = [], 0

    def _run(self) -> None:
        while (batch := self._work.get()) is not None:
            size = sum(len(data) for data in batch)
            if self._failure is None:
                try:
                    self._consume(batch)
                except BaseException as exc:  # noqa: BLE001 - raised in the producer's thread
                    self._failure = exc
            with self._room:
                self._waiting -= size
                self._room.notify_all()

    @property
    def backlogged(self) -> bool:
        return self._waiting > self._backlog_limit

    def wait_for_room(self) -> None:
        with self._room:
            self._room.wait_for(lambda: self._waiting <= self._backlog_limit // 2)

    def drain(self) -> None:
        """Wait until everything handed over was consumed; stop the thread."""
        self._submit()
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Stop without waiting (after a failed transfer); later chunks are dropped."""
        self._batch, self._batch_size = [], 0
        if self._thread is not None:
            self._failure = self._failure or _Closed()
            self._work.put(None)
            self._thread = None


class _Closed(Exception):
    """The worker was closed."""


class Hasher:
    """SHA-256 of a stream of chunks, computed by a :class:`ChunkWorker`."""

    def __init__(
        self, *, inline_limit: int = 4 * CHUNK_SIZE, backlog: int = 8 * CHUNK_SIZE
    ) -> None:
        self._sha256 = hashlib.sha256()
        self._worker = ChunkWorker(
            self._update, "incus-images-sha256", inline_limit=inline_limit, backlog=backlog
        )

    def _update(self, batch: list[bytes | memoryview]) -> None:
        for data in batch:
            self._sha256.update(data)

    def update(self, data: bytes | memoryview) -> None:
        self._worker.put(data)

    @property
    def backlogged(self) -> bool:
        return self._worker.backlogged

    def wait_for_room(self) -> None:
        self._worker.wait_for_room()

    def hexdigest(self) -> str:
        """Wait for everything handed over to be hashed; return the digest."""
        self._worker.drain()
        return self._sha256.hexdigest()

    def close(self) -> None:
        """Stop the worker without waiting for a digest (after a failed transfer)."""
        self._worker.close()
