"""What goes through an upload's body: the flavour's client produces it chunk by chunk from
the plan, and passes each chunk through :class:`UploadMeter` on its way out (hash, byte count,
progress, checks)."""

from __future__ import annotations

from .._errors import ImageDataError, InvalidInputError
from .plan import Segment, UploadPlan
from .reports import Progress, ProgressCallback
from .sources import JSON_MESSAGE, JSON_WHITESPACE, looks_like_json
from .threads import Hasher


class UploadMeter:
    """Everything each chunk of image data passes through on its way to the server.

    It counts, reports progress, checks that sources deliver the size they announced, refuses
    a raw body that incusd would read as a JSON request (holding back the first bytes until
    that is decided; see ``looks_like_json``), and hashes, on a worker thread, when
    ``hash_inline`` (sources that cannot be read twice); otherwise see :class:`Rehash`.
    """

    def __init__(
        self, plan: UploadPlan, progress: ProgressCallback | None, *, hash_inline: bool = True
    ) -> None:
        self._hasher = Hasher() if hash_inline else None
        self.progress = Progress(progress, plan.data_size)
        self._segment = Segment()
        self._last_argument = "rootfs" if plan.multipart else "image_data"
        #: Whether the last bytes were handed to the HTTP client: from then on, incusd may
        #: have the whole image, whatever happens to the request.
        self.body_handed = False
        self._part_bytes = 0
        self._head: bytes | None = None if plan.multipart else b""

    def start(self, segment: Segment) -> None:
        """Begin a source (the first one also reports progress (0, total))."""
        if self._segment.source is None and self.progress.done == 0:
            self.progress.start()
        self._segment = segment
        self._part_bytes = 0

    def take(self, chunk: bytes) -> bytes:
        """Meter one chunk of a source; return the bytes to send now (maybe fewer, or more)."""
        if not chunk:
            return b""
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._part_bytes += len(chunk)
        self.progress.advance(len(chunk))
        if self.progress.done == self.progress.total:
            # Report the end while the last bytes are still here: once they are sent, incusd
            # has the whole image, and a callback that raises could no longer stop it.
            self.progress.finish()
        source = self._segment.source
        if source is not None and source.size is not None and self._part_bytes > source.size:
            raise self._size_changed()
        if self._head is None:
            return chunk
        # Leading whitespace goes out at once; only the first bytes after it are held back.
        pending = self._head + chunk
        undecided = pending.lstrip(JSON_WHITESPACE)
        self._head = undecided
        if len(undecided) < 4:
            return pending[: len(pending) - len(undecided)]
        return pending[: len(pending) - len(undecided)] + self._release_head()

    def _release_head(self) -> bytes:
        head, self._head = self._head or b"", None
        if looks_like_json(head.lstrip(JSON_WHITESPACE)[:4]):
            raise InvalidInputError(f"{JSON_MESSAGE}; the upload was stopped")
        return head

    def _size_changed(self) -> ImageDataError:
        source = self._segment.source
        assert source is not None
        return ImageDataError(
            f"{self._segment.argument} delivered {self._part_bytes} bytes or more instead of "
            f"the {source.size} it had when the upload started (did the file change?)"
        )

    def end(self, segment: Segment) -> bytes:
        """Close a source; return held-back bytes still to send."""
        source = segment.source
        assert source is not None
        if source.size is not None and self._part_bytes != source.size:
            raise self._size_changed()
        if self._part_bytes == 0:
            raise InvalidInputError(f"{segment.argument} is empty")
        if segment.argument == self._last_argument:
            self.progress.finish()
        return self._release_head() if self._head is not None else b""

    @property
    def backlogged(self) -> bool:
        return self._hasher is not None and self._hasher.backlogged

    def wait_for_room(self) -> None:
        if self._hasher is not None:
            self._hasher.wait_for_room()

    def finish(self) -> str | None:
        """End the upload; the SHA-256 of the image data sent (metadata then rootfs, without
        framing) when it was hashed inline, else None."""
        self.progress.finish()
        return None if self._hasher is None else self._hasher.hexdigest()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.close()
