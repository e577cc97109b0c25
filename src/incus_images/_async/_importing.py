"""Bringing a new image onto a server: the one path that create(), copy() and publish() share.

    preflight    aliases still free, profiles present: refused before anything is sent
    start        an upload this client streams, or a JSON request the daemon carries out
    wait         long-poll the operation; its progress reported when asked
    verify       the fingerprint the server stored is the one expected
    follow-up    what the start could not carry: settings, profiles, aliases
    result       the Image

When anything fails once the image was stored, the image is deleted again. What a failure
leaves behind is recorded on its error (``left_behind`` and a note: ``note_left_behind``),
never in its message. An image the server had when the call began is never deleted, whatever
the server or a copy's source reports: the preflight notes which images were there
(``survey``), and only an image that was not is ever discarded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import attrs

from .. import _api as api
from .._errors import (
    ChecksumMismatchError,
    ConflictError,
    ImageDataError,
    IncusError,
    LeftBehind,
    OperationError,
    OperationGoneError,
    PreconditionFailedError,
    TransferError,
    UnexpectedResponseError,
    note_left_behind,
)
from .._flavours import async_flavour
from .._logging import logger
from .._models import Image, ImageAlias, Operation, OperationStatus
from .._protocol import Call, record_interruption, stored_fingerprint, structure
from .._requests import FollowUp, ImageAliasesPost, ImagePut
from .._transfer.meter import UploadMeter
from .._transfer.plan import PreparedUpload
from .._transfer.rehash import Rehash
from .._waiting import WaitBudget
from ._bodies import upload_body
from ._calls import AsyncImageCalls

#: Called with each new state of a running operation (for progress reports).
OperationWatcher = Callable[[Operation], object]


def follow_up_description(first: str, follow_up: FollowUp) -> str:
    """What a completion still does: ``first``, then the follow-up's steps."""
    rest = follow_up.describe()
    return f"{first}, then {rest}" if rest else first


def succeeded_with(operation: Operation, fingerprint: str) -> Operation:
    """The operation as it ended: it stored the image (which is there), though the server
    forgot it before it could be read."""
    return attrs.evolve(
        operation,
        status="Success",
        status_code=OperationStatus.SUCCESS,
        metadata={"fingerprint": fingerprint},
        err="",
    )


class AsyncImporter:
    """One new image on one server. ``action`` names it in every error: "upload image 'x'"."""

    def __init__(self, calls: AsyncImageCalls, action: str) -> None:
        self._calls = calls
        self.action = action
        #: The fingerprints the server held before anything was sent (see survey()); until
        #: they are known, nothing may be discarded.
        self._before: frozenset[str] | None = None
        #: The aliases already taken that are to be moved to the new image (reuse=True),
        #: as the preflight read them, with their ETags.
        self._taken: dict[str, tuple[ImageAlias, str]] = {}

    @property
    def server(self) -> str:
        return self._calls.server

    # ----------------------------------------------------------------------------------------
    # Preflight.

    async def survey(self) -> frozenset[str]:
        """The images the server holds before this import sends anything (read once). Every
        path that may clean up after a failure (it waits for the image) surveys first.

        A hostile copy source can make the target report another image than the one asked
        for, one the target already held; what was here before must never be discarded."""
        if self._before is None:
            self._before = frozenset(await self._calls.fingerprints())
        return self._before

    def had(self, fingerprint: str) -> bool:
        """Whether the image was on the server before this import (or may have been: the
        survey was not made)."""
        return self._before is None or fingerprint in self._before

    async def discard(self, fingerprint: object) -> tuple[LeftBehind, str]:
        """Delete an image this import brought in but must not keep; an image that was there
        before stays. What is left behind, and the sentence that says so."""
        if isinstance(fingerprint, str) and self.had(fingerprint):
            return LeftBehind.KEPT, f"image {fingerprint} was on the server before and stays"
        return await self._calls.discard(fingerprint)

    async def preflight(
        self, aliases: Sequence[str], profiles: Sequence[str], *, reuse: bool = False
    ) -> None:
        """Refuse aliases already taken and profiles that do not exist, before anything.

        With ``reuse``, a taken alias is not refused: it is read now (with its ETag) and
        moved to the new image once that is stored and verified (follow_up()), unless it
        changed in between."""
        try:
            for name in aliases:
                found = await self._calls.find_alias(name)
                if found is None:
                    continue
                alias, etag = found
                if not reuse:
                    raise ConflictError(
                        f"Could not {self.action} on {self.server}: alias {name!r} is already "
                        "taken (reuse=True moves it to the new image)",
                        server=self.server,
                    )
                if not etag:
                    # Without it, a move could overwrite a concurrent change unseen.
                    raise UnexpectedResponseError(
                        f"Could not {self.action} on {self.server}: alias {name!r} is taken and "
                        "the server sent no ETag with it, so it cannot be moved safely",
                        server=self.server,
                    )
                self._taken[name] = (alias, etag)
            for profile in profiles:
                await self._calls.require_profile(
                    profile, f"find profile {profile!r} for: {self.action}"
                )
        except IncusError as exc:
            note_left_behind(exc, LeftBehind.NOTHING, "nothing was sent")
            raise

    # ----------------------------------------------------------------------------------------
    # Start.

    async def start(self, call: Call) -> Operation:
        """Send a JSON request that starts an operation on the server; return it."""
        envelope = await self._calls.connection.request(call)
        return structure(call, self.server, envelope.metadata, Operation)

    async def send_body(
        self, headers: dict[str, str | bytes], body: AsyncIterator[bytes]
    ) -> Operation:
        """POST an image body this client streams; return the upload's operation."""
        call = api.new_image(action=self.action, headers=headers)
        try:
            envelope = await self._calls.connection.request(call, content=body)
        except ImageDataError as exc:
            # httpcore's pool re-raises what the body raised "from None": the OSError that
            # caused it is left as its context only. It is the cause again.
            if exc.__cause__ is None and isinstance(exc.__context__, OSError):
                raise exc from exc.__context__
            raise
        return structure(call, self.server, envelope.metadata, Operation)

    @contextlib.contextmanager
    def interruptions(
        self, *, complete: Callable[[], bool], describe: Callable[[], str]
    ) -> Iterator[None]:
        """Record what a body that did not go through means for the server: ``complete()``
        tells whether its last bytes had been handed over (then incusd may have them all and
        store the image), ``describe()`` how far it got.

        Before the last bytes, every failure (the SDK's own checks of the bytes, a source
        that cannot be read, the server's early refusal) leaves nothing: incusd discards an
        incomplete upload. After them, only an interruption is recorded (a lost connection,
        a timeout, Ctrl-C); the server's own answer says what it did."""
        try:
            yield
        except BaseException as exc:
            if complete():
                record_interruption(
                    exc,
                    LeftBehind.MAY_BE_STORED,
                    f"{describe()}; the image's last bytes had been sent, so incusd may still "
                    "store it: look for it before retrying",
                )
                raise
            record_interruption(
                exc,
                LeftBehind.NOTHING,
                f"{describe()}; incusd discards an incomplete upload, so nothing was stored",
                any_error=True,
            )
            raise

    @contextlib.contextmanager
    def accepted(self, what: Callable[[], str]) -> Iterator[None]:
        """Once the server accepted the image, a lost connection, a timeout or an interruption
        no longer means that nothing was stored: record that it may be. ``what()`` names the
        image."""
        try:
            yield
        except BaseException as exc:
            record_interruption(
                exc,
                LeftBehind.MAY_BE_STORED,
                f"the server had accepted {what()} ({self.action}), so it may be stored: "
                "look for it before retrying",
            )
            raise

    # ----------------------------------------------------------------------------------------
    # Wait, verify, follow up.

    async def wait(
        self,
        operation: Operation,
        *,
        fingerprint: str | None = None,
        watch: OperationWatcher | None = None,
        budget: WaitBudget | None = None,
    ) -> Operation:
        """Wait for the operation that brings the image; failures raise OperationError.

        Incus forgets a finished operation about five seconds after it ends; a wait that comes
        later (a client with many calls queued) learns nothing from it. When the image it was
        to bring (``fingerprint``) is there, the operation succeeded: it is returned as such.
        """
        try:
            return await self._calls.operations._wait(
                operation.id, budget, action=self.action, fingerprint=fingerprint, watch=watch
            )
        except OperationGoneError:
            if fingerprint is None or await self._calls.find(fingerprint) is None:
                raise
            return succeeded_with(operation, fingerprint)

    async def verified(
        self, finished: Operation, expected: str | None, *, expected_is: str = "expected"
    ) -> str:
        """The fingerprint the finished operation stored, checked against ``expected`` (which
        ``expected_is`` names: "the bytes sent hash to"). A server that reports none answers
        nonsense (UnexpectedResponseError); another one than expected is a
        ChecksumMismatchError. Either way what it stored is discarded."""
        reported = stored_fingerprint(finished)
        if reported is not None and (expected is None or reported == expected):
            return reported
        failure: IncusError
        if reported is None:
            failure = UnexpectedResponseError(
                f"Could not {self.action} on {self.server}: the operation succeeded but "
                f"reports no fingerprint ({finished.metadata!r:.200})",
                server=self.server,
                operation=finished,
                fingerprint=expected,
            )
        else:
            failure = ChecksumMismatchError(
                f"Could not {self.action} on {self.server}: the server stored {reported!r}, "
                f"but {expected_is} {expected}",
                server=self.server,
                operation=finished,
                fingerprint=expected,
            )
        raise note_left_behind(failure, *await self.discard(reported))

    async def follow_up(self, fingerprint: str, follow_up: FollowUp) -> None:
        """Apply what the start could not carry; on failure delete the image again (unless it
        was there before: see discard()). The error's message says which call it was part
        of; its record, what is left."""
        if not follow_up.needed:
            return
        what = f"the new image '{fingerprint}'"
        moves = [alias.name for alias in follow_up.aliases if alias.name in self._taken]
        try:
            if follow_up.patch is not None:
                await self._calls.write(
                    fingerprint, follow_up.patch, f"set the settings of {what}", None
                )
            if follow_up.properties is not None or follow_up.profiles is not None:
                await self._put(fingerprint, follow_up, what)
            for alias in follow_up.aliases:
                if alias.name in self._taken:
                    continue  # moved below, once nothing can make the image go again
                await self._calls.create_alias(
                    ImageAliasesPost(
                        name=alias.name, target=fingerprint, description=alias.description
                    ),
                    f"create alias {alias.name!r} for {what}",
                )
        except IncusError as exc:
            failure = exc._amended(
                f"{exc} (while trying to {self.action})", fingerprint=fingerprint
            )
            raise note_left_behind(failure, *await self.discard(fingerprint)) from exc
        await self._move_aliases(fingerprint, moves, what)

    async def _move_aliases(self, fingerprint: str, names: Sequence[str], what: str) -> None:
        """Move the taken aliases (reuse=True) to the image, last: the image is stored,
        verified and complete by now, and is never deleted again (its aliases would go with
        it). Each move is a PATCH with the ETag read by the preflight: an alias changed since
        is left as it is (PreconditionFailedError), and the image stays."""
        for index, name in enumerate(names):
            alias, etag = self._taken[name]
            if alias.target == fingerprint:
                continue  # it points at this image already
            try:
                await self._calls.move_alias(
                    name,
                    fingerprint,
                    etag,
                    f"move alias {name!r} from image '{alias.target}' to {what}",
                )
            except IncusError as exc:
                failure = exc._amended(
                    f"{exc} (while trying to {self.action})", fingerprint=fingerprint
                )
                moved = ", ".join(repr(done) for done in names[:index]) or "none"
                changed = (
                    " (it changed after it was read, and a concurrent change is never overwritten)"
                    if isinstance(exc, PreconditionFailedError)
                    else ""
                )
                sentence = (
                    f"image {fingerprint} is stored and complete and stays; alias {name!r} was "
                    f"not moved to it{changed}; aliases moved to it before: {moved}; those "
                    "after were not moved"
                )
                raise note_left_behind(failure, LeftBehind.STORED, sentence) from exc

    async def _put(self, fingerprint: str, follow_up: FollowUp, what: str) -> None:
        # Only PUT sets profiles, and a PUT resets what it omits: send back what was read.
        current, etag = await self._calls.get(fingerprint)
        properties = current.properties if follow_up.properties is None else follow_up.properties
        profiles = current.profiles if follow_up.profiles is None else follow_up.profiles
        if properties == current.properties and profiles == current.profiles:
            return
        body = ImagePut(
            public=current.public,
            auto_update=current.auto_update,
            properties=properties,
            profiles=profiles,
        )
        await self._calls.write(
            fingerprint, body, f"set the properties and profiles of {what}", etag
        )

    async def image(self, fingerprint: str) -> Image:
        """The new image, read back once everything about it succeeded."""
        try:
            image, _ = await self._calls.get(fingerprint)
        except BaseException as exc:
            record_interruption(
                exc,
                LeftBehind.STORED,
                f"image {fingerprint} is stored and complete ({self.action} succeeded); only "
                "reading it back failed",
            )
            raise
        return image

    # ----------------------------------------------------------------------------------------
    # The whole path of an upload (create()).

    async def upload(
        self, prepared: PreparedUpload, *, wait: bool, budget: WaitBudget, reuse: bool = False
    ) -> Image | Operation:
        """Stream an upload this client reads from local sources, and finish it (wait), or
        leave what is left of it to operations.wait() (see ``_waiting``); ``reuse`` moves
        taken aliases (see preflight())."""
        await self.preflight(prepared.aliases, prepared.profiles, reuse=reuse)
        if wait or prepared.follow_up.needed:
            await self.survey()
        plan = prepared.plan
        # Sources that can be read again are hashed after sending, beside incusd's processing
        # (see Rehash); the others as they go.
        rereadable = all(source.rereadable for source in plan.sources)
        meter = UploadMeter(plan, prepared.progress, hash_inline=not rereadable)
        started = time.monotonic()
        logger.debug(
            "upload of image %s to %s started (%s bytes)",
            plan.description,
            self.server,
            "an unknown number of" if plan.data_size is None else plan.data_size,
        )
        try:
            with self.interruptions(
                complete=lambda: meter.body_handed,
                describe=lambda: (
                    f"the upload of image {plan.description} to {self.server} was interrupted "
                    f"after {meter.progress.done} of "
                    f"{plan.data_size or 'an unknown number of'} bytes"
                ),
            ):
                operation = await self.send_body(prepared.headers, upload_body(plan, meter))
                sha256 = meter.finish()
        finally:
            meter.close()
        logger.debug(
            "upload of image %s to %s: %d bytes sent in %.1f s",
            plan.description,
            self.server,
            meter.progress.done,
            time.monotonic() - started,
        )
        if not wait and not prepared.follow_up.needed:
            return operation
        completion = _UploadCompletion(
            self,
            prepared,
            sha256,
            Rehash(plan.sources) if sha256 is None else None,
            sent=meter.progress.done,
            started=started,
        )
        operations = self._calls.operations
        if not await operations._finish(operation, completion, wait=wait, budget=budget):
            return operation
        assert completion.fingerprint is not None
        return await self.image(completion.fingerprint)

    async def _wait_for_upload(
        self,
        operation: Operation,
        sha256: str | None,
        rehash: Rehash | None,
        budget: WaitBudget,
    ) -> Operation:
        try:
            return await self.wait(operation, fingerprint=sha256, budget=budget)
        except OperationError as exc:
            if rehash is None or exc.fingerprint is not None:
                raise
            if isinstance(exc, OperationGoneError):
                digest = await async_flavour.run_blocking(rehash.result)
                if await self._calls.find(digest) is not None:
                    return succeeded_with(operation, digest)
            try:
                digest = await async_flavour.run_blocking(rehash.result)
            except TransferError:
                raise exc from None
            raise exc._amended(
                f"{exc} (the data sent hashes to {digest})", fingerprint=digest
            ) from exc

    async def _rehashed(self, rehash: Rehash, finished: Operation) -> str:
        try:
            return await async_flavour.run_blocking(rehash.result)
        except TransferError as exc:
            failure = exc._amended(
                f"Could not {self.action} on {self.server}: {exc}, so what was stored cannot "
                "be verified",
                server=self.server,
                operation=finished,
            )
            left = await self.discard(stored_fingerprint(finished))
            # The cause is the OSError when reading the sources again failed.
            raise note_left_behind(failure, *left) from exc.__cause__ or exc


class _UploadCompletion:
    """The rest of an upload once its bytes are sent: wait for incusd to store the image,
    verify its fingerprint against the bytes sent, apply what the upload could not carry."""

    def __init__(
        self,
        importer: AsyncImporter,
        prepared: PreparedUpload,
        sha256: str | None,
        rehash: Rehash | None,
        *,
        sent: int,
        started: float,
    ) -> None:
        self._importer = importer
        self._prepared = prepared
        self._rehash = rehash
        self._sent = sent
        self._started = started
        #: The image's fingerprint: known once the bytes sent are hashed.
        self.fingerprint = sha256

    def describe(self) -> str:
        return follow_up_description(
            f"verify the upload of image {self.fingerprint or self._prepared.plan.description}",
            self._prepared.follow_up,
        )

    async def complete(self, operation: Operation, budget: WaitBudget) -> Operation:
        importer = self._importer
        with importer.accepted(
            lambda: f"image {self.fingerprint or self._prepared.plan.description}"
        ):
            finished = await importer._wait_for_upload(
                operation, self.fingerprint, self._rehash, budget
            )
            if self._rehash is not None:
                self.fingerprint = await importer._rehashed(self._rehash, finished)
                self._rehash = None
            sha256 = self.fingerprint
            assert sha256 is not None
            importer.action = f"upload image {sha256[:12]}"
            await importer.verified(finished, sha256, expected_is="the bytes sent hash to")
            await importer.follow_up(sha256, self._prepared.follow_up)
        logger.info(
            "uploaded image %s to %s: %d bytes, stored and verified in %.1f s",
            sha256,
            importer.server,
            self._sent,
            time.monotonic() - self._started,
        )
        return finished
