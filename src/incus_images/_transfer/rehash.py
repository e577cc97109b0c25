"""The SHA-256 of an upload's sources that can be read again, computed on a thread after they
were sent (beside incusd's own processing of the upload)."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator

from .._errors import ImageDataError
from .sources import Source, file_identity, reading
from .threads import CHUNK_SIZE


class Rehash:
    """SHA-256 of sources that can be read twice, computed on a thread after they were sent.

    Hashing while sending puts a CPU-second per GiB on the client while incusd is busiest
    receiving; once the body is sent, incusd processes the upload on one core, and the hash
    of the same bytes, read again, runs beside it for free. A file whose stat() identity
    changed since the upload began was not sent as it is now, and fails the check.
    """

    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources
        self._digest: str | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="incus-images-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sha256 = hashlib.sha256()
        try:
            for source in self._sources:
                with reading(source, "the image data"):
                    for chunk in _reread(source):
                        sha256.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed over in result()
            self._failure = exc
        else:
            self._digest = sha256.hexdigest()

    def result(self) -> str:
        """Wait for the digest (blocking: from a worker thread in async code)."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._digest is not None
        return self._digest


def _reread(source: Source) -> Iterator[bytes]:
    if source.kind == "bytes":
        yield source.value
        return
    if source.kind == "path":
        file = open(source.value, "rb")  # noqa: SIM115 - closed below
        close = True
    else:
        file, close = source.value, False
    try:
        if file_identity(os.fstat(file.fileno())) != source.identity:
            raise ImageDataError(f"{source.name or 'the source file'} changed during the upload")
        position = file.tell()
        file.seek(source.offset or 0)
        left = source.size or 0
        while left and (chunk := file.read(min(CHUNK_SIZE, left))):
            left -= len(chunk)
            yield chunk
        file.seek(position)
        if left or file_identity(os.fstat(file.fileno())) != source.identity:
            raise ImageDataError(f"{source.name or 'the source file'} changed during the upload")
    finally:
        if close:
            file.close()
