"""The images API: list, get, create, update, export and delete images, and manage aliases."""

from __future__ import annotations

import builtins
import os
import warnings
from collections.abc import AsyncIterable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, Protocol, overload

import httpx

from .. import _api as api
from .._errors import (
    APIError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    PreconditionFailedError,
    note_left_behind,
)
from .._flavours import async_flavour
from .._models import Image, ImageAlias, ImageAliasList, ImageList, Operation
from .._protocol import (
    fingerprints_from_urls,
    structure,
    structure_list,
)
from .._validate import (
    IMAGE_TYPES,
    alias_fields,
    alias_name,
    aware_datetime,
    boolean,
    callback,
    choice,
    fingerprint_prefix,
    image_filter,
    names_list,
    new_alias_name,
    optional_boolean,
    profile_name,
    properties_map,
    secret_token,
)
from .._waiting import WaitBudget
from ._calls import AsyncImageCalls
from ._connection import AsyncConnection
from .operations import AsyncOperationsAPI

# Transfers, copies, publishing and request bodies are imported by the methods that use them:
# a script that lists or reads images never loads them (start-up time, BENCHMARKS.md).
if TYPE_CHECKING:
    from .._build.build import ImageBuild
    from .._events import ImageEvent
    from .._simplestreams import SimpleStreams
    from .._transfer.reports import ProgressCallback
    from ._copying import CopyMode
    from .events import AsyncEventStream

#: What an image (or one part of a split image) can be given as.
ImageData = bytes | str | os.PathLike[str] | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]

#: How often update() re-reads and retries when the image changed under it (HTTP 412).
UPDATE_ATTEMPTS = 5


def _server_filter(value: object) -> str:
    """A filter to send: refused here when incusd would crash the request on it (it closes
    the connection with no answer, which reads as a lost connection)."""
    from .._filter import refuse_what_crashes_incusd

    expression = image_filter(value)
    refuse_what_crashes_incusd(expression)
    return expression


def _optional_secret(secret: object) -> str | None:
    return None if secret is None else secret_token(secret)


def type_name(value: object) -> str:
    return type(value).__name__


class AsyncImageServer(Protocol):
    """A server whose images can be copied: an AsyncClient (of the same flavour as the
    client copying)."""

    @property
    def images(self) -> AsyncImagesAPI: ...


class AsyncImagesAPI:
    """Images and image aliases on the client's server (or cluster), in its project.

    Every method that takes a fingerprint accepts the full SHA-256 or any unique prefix of it,
    in either case. Results are typed models; failures raise subclasses of IncusError.
    """

    def __init__(self, connection: AsyncConnection, operations: AsyncOperationsAPI) -> None:
        self._connection = connection
        self._calls = AsyncImageCalls(connection, operations)

    # ----------------------------------------------------------------------------------------
    # Reading.

    @overload
    async def list(
        self, recursion: Literal[0], *, filter: str | None = None, all_projects: bool = False
    ) -> builtins.list[str]: ...

    @overload
    async def list(
        self,
        recursion: Literal[1] = 1,
        *,
        filter: str | None = None,
        all_projects: bool = False,
    ) -> ImageList: ...

    async def list(
        self, recursion: int = 1, *, filter: str | None = None, all_projects: bool = False
    ) -> ImageList | builtins.list[str]:
        """Return the images, sorted by project and fingerprint.

        recursion=1 (the default) returns an ImageList of Image objects (a list that notebooks
        show as a table); recursion=0 returns a list of full fingerprints.

        filter is Incus's own filter, applied by the server: ``properties.os eq debian and
        public eq true``. Fields are the JSON names (``architecture``, ``type``, ``public``,
        ``fingerprint``, ``properties.<key>``, ...); only ``eq`` and ``ne`` exist, evaluated left
        to right without precedence, and a string value is a case-insensitive regular
        expression matched whole (``fingerprint eq ab12.*``). A filter the server refuses
        raises APIError naming it.

        all_projects=True lists the images of every project; each Image says its ``project``.
        """
        if type(recursion) is not int or recursion not in (0, 1):
            raise InvalidInputError(f"recursion must be 0 or 1, got {recursion!r}")
        call = api.list_images(
            recursion=recursion,
            filter=None if filter is None else _server_filter(filter),
            all_projects=boolean(all_projects, "all_projects"),
        )
        try:
            envelope = await self._connection.request(call)
        except APIError as exc:
            if filter is None or exc.status_code not in (400, 500):
                raise
            raise exc._amended(f"{exc} The server refused the filter {filter!r}.") from exc
        server = self._connection.server
        if recursion == 0:
            # All projects list an image once per project it is in.
            return sorted(set(fingerprints_from_urls(call, server, envelope.metadata)))
        images = structure_list(call, server, envelope.metadata, Image)
        return ImageList(sorted(images, key=lambda image: (image.project, image.fingerprint)))

    async def get(self, fingerprint: str, *, secret: str | None = None) -> Image:
        """Return the image with this fingerprint (or unique fingerprint prefix).

        secret is a download secret from the image's server (``create_secret()``), with which
        a client the server does not trust reads a private image. Using it spends it: it
        stays valid for only about five seconds more, enough for an export right after.
        """
        prefix = fingerprint_prefix(fingerprint)
        image, _ = await self._calls.get(prefix, secret=_optional_secret(secret))
        return image

    async def create_secret(self, fingerprint: str) -> str:
        """Return a one-time secret with which a client the server does not trust may read
        and export this (private) image, or another server may copy it.

        The secret is spent by its first use (it then stays valid for about five seconds).
        An unused one stays valid until the server restarts: hand it out only to be used.
        """
        image = await self.get(fingerprint)
        secret, _ = await self._calls.create_secret(image.fingerprint)
        return secret

    async def refresh(
        self, fingerprint: str, *, wait: bool = False, timeout: float | None = None
    ) -> Operation:
        """Ask the server to look for a newer version of the image at its source.

        Only images copied with ``auto_update`` (or from an image server) have a source. With
        wait=True, return the finished Operation: ``operation.metadata["refreshed"]`` is True
        when a newer image replaced this one (its aliases moved to the new image), False when
        it was current; timeout bounds that wait. Without a source the refresh fails
        (OperationError).
        """
        wait = boolean(wait, "wait")
        budget = WaitBudget(timeout)
        image = await self.get(fingerprint)
        call = api.refresh_image(image.fingerprint)
        envelope = await self._connection.request(call)
        operation = structure(call, self._connection.server, envelope.metadata, Operation)
        if wait:
            return await self._calls.operations._wait_noting(
                operation,
                budget,
                action=call.action,
                left="the refresh may still replace the image",
            )
        return operation

    @overload
    async def copy(
        self,
        image: str,
        source: AsyncImageServer | SimpleStreams,
        *,
        mode: CopyMode | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        copy_aliases: bool = False,
        public: bool | None = None,
        auto_update: bool | None = None,
        profiles: Sequence[str] | None = None,
        type: str | None = None,
        architecture: str | None = None,
        progress: ProgressCallback | None = None,
        wait: Literal[True] = True,
        timeout: float | None = None,
    ) -> Image: ...

    @overload
    async def copy(
        self,
        image: str,
        source: AsyncImageServer | SimpleStreams,
        *,
        mode: CopyMode | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        copy_aliases: bool = False,
        public: bool | None = None,
        auto_update: bool | None = None,
        profiles: Sequence[str] | None = None,
        type: str | None = None,
        architecture: str | None = None,
        progress: ProgressCallback | None = None,
        wait: Literal[False],
        timeout: float | None = None,
    ) -> Operation: ...

    @overload
    async def copy(
        self,
        image: str,
        source: AsyncImageServer | SimpleStreams,
        *,
        mode: CopyMode | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        copy_aliases: bool = False,
        public: bool | None = None,
        auto_update: bool | None = None,
        profiles: Sequence[str] | None = None,
        type: str | None = None,
        architecture: str | None = None,
        progress: ProgressCallback | None = None,
        wait: bool,
        timeout: float | None = None,
    ) -> Image | Operation: ...

    async def copy(
        self,
        image: str,
        source: AsyncImageServer | SimpleStreams,
        *,
        mode: CopyMode | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        copy_aliases: bool = False,
        public: bool | None = None,
        auto_update: bool | None = None,
        profiles: Sequence[str] | None = None,
        type: str | None = None,
        architecture: str | None = None,
        progress: ProgressCallback | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Image | Operation:
        """Copy an image from another server onto this one; return the copy (wait=True).

        image names the image on the source: an alias (looked up first, as the incus CLI
        does), a fingerprint or a unique prefix. source is another client of the same kind
        (any Incus server, over HTTPS or a unix socket, trusted or not) or a
        :class:`SimpleStreams` image server. ``type`` ("container" or "virtual-machine")
        picks which image an alias names when both kinds exist.

        architecture names the architecture of the image wanted, in Incus's names
        (``x86_64``, ``aarch64``) or another spelling Incus knows (``amd64``, ``arm64``);
        None: whatever the name gives (an image server gives the image of this server's
        architecture when the alias has one). From an image server, an alias resolves as
        incusd does: the bare alias for this server's own architecture, else
        ``ALIAS/ARCH``, tried in each spelling of the architecture a catalogue may use (the
        one given first; with wait=False, only the one given: use the catalogue's own
        spelling then). With auto_update=True, the alias recorded is the one that resolved,
        so refreshes follow that architecture. An Incus server's alias or a fingerprint
        names one image: when it is not of that architecture, or an image server has none
        of it, NotFoundError names what was found or tried, and nothing is kept.

        mode says who moves the bytes:

        * ``"pull"``: this server downloads from the source's HTTPS address; no byte passes
          through this client. The source's certificate is pinned (the file this client
          verifies it with, else the certificate it showed). A private image is fetched with
          a one-time secret, which only a source that trusts this client can issue.
        * ``"push"``: the source uploads to this server's HTTPS address (this client must
          reach this server over HTTPS, and the source must trust this client). incusd pushes
          a virtual-machine image as a container image, so those are refused.
        * ``"relay"``: this client streams the source's export into this server's upload,
          in constant memory; the export is verified before the upload is let complete, and
          this server checks the fingerprint too.
        * None: pull when the source client uses HTTPS, relay when it uses a unix socket.

        aliases are created here, and copy_aliases=True adds the source's aliases of the
        image; an alias already taken here is refused before anything is copied, unless
        reuse=True: then it is moved to the copy (see ``create()``). public,
        auto_update and profiles set the copy's settings (None: the server's default).
        auto_update=True (pull only) records the source, by alias when the image was named
        by one, so that refresh() and the server's own updater follow the alias to newer
        images. The copy gets the source image's properties and file name.

        Waiting follows the one rule (README, "What waiting means"): wait=True returns the
        copy once it is stored, verified and its settings and aliases applied; timeout bounds
        that wait. wait=False returns this server's Operation as soon as it runs (a relay:
        once the bytes are sent), and the rest (verification, the source's properties, the
        aliases) is done when that Operation is waited for with ``operations.wait()``. A push
        is the source's operation: it needs wait=True. An image this server already has is
        not copied again: it is returned (wait=True), or an already finished Operation
        (wait=False), with the aliases asked for added.

        progress(done, total) reports bytes: counted in relay mode, the server's own
        download reports (scaled to the image's size) in pull and push mode.

        Failures name the source, this server, the image and the mode, and record what was
        left where (``left_behind`` and a note); a copy that fails after the image arrived is
        deleted again. A source that does not trust this client, where the mode needs one that
        does, raises ForbiddenError; a push of a virtual-machine image, ConflictError.
        """
        from .._simplestreams import SimpleStreams
        from ._copying import AsyncCopier, copy_options

        options = copy_options(
            mode=mode,
            aliases=aliases,
            reuse=reuse,
            copy_aliases=copy_aliases,
            public=public,
            auto_update=auto_update,
            profiles=profiles,
            image_type=type,
            architecture=architecture,
            progress=progress,
            wait=wait,
            timeout=timeout,
        )
        copier = AsyncCopier(self._calls)
        if isinstance(source, SimpleStreams):
            return await copier.from_simplestreams(image, source, options)
        return await copier.copy(image, self._source_calls(source), options)

    async def ensure(
        self,
        image: str,
        source: AsyncImageServer | SimpleStreams,
        *,
        type: str | None = None,
        architecture: str | None = None,
        aliases: Sequence[str] | None = None,
        auto_update: bool | None = None,
        public: bool | None = None,
        profiles: Sequence[str] | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Image:
        """Make sure this server holds the image, once, with the aliases pointing at it;
        return it. Idempotent: a second call transfers nothing and sends no copy request.

        image and source are as for ``copy()``. The image this server already holds is
        returned when it is the one asked for: the same fingerprint (a full one given, or
        the one the source's alias or prefix names, for an Incus server as source); or an
        image recorded as coming from that source under that alias (its ``update_source``:
        server address, protocol and alias, as a pull copy records it) and of the type and
        architecture asked. Otherwise the image is copied, as ``copy()`` does (mode chosen
        as there; ``progress`` and ``timeout`` apply to it).

        type None accepts an image of either type (a container one first, as incusd
        prefers). architecture names the architecture as in ``copy()``; None: the image the
        alias resolves to, which is one of this server's own architecture (the first it
        lists) when the source has one, else the alias's other architecture: an image held
        of this server's own architecture is preferred. A full fingerprint this server
        holds, but of another type or architecture than asked, is NotFoundError.

        aliases then point at the image: a missing one is created, one pointing at another
        image is moved to it, as reuse=True moves it (PATCH with its ETag; the other image
        stays). A change another client makes to an alias at the same time is never
        overwritten (ConflictError or PreconditionFailedError; the image stays), unless it
        points the alias at this same image. public, auto_update and profiles, when given,
        are set on a copy, and changed on an image held already when they differ.

        Two clients ensuring the same image at once end with one image, the aliases pointing
        at it, and both get it back: an image another client stored first is found, not
        refused.
        """
        from .._simplestreams import SimpleStreams
        from ._copying import AsyncCopier, copy_options
        from ._ensuring import AsyncEnsurer

        options = copy_options(
            mode=None,
            aliases=aliases,
            reuse=True,
            copy_aliases=False,
            public=public,
            auto_update=auto_update,
            profiles=profiles,
            image_type=type,
            architecture=architecture,
            progress=progress,
            wait=True,
            timeout=timeout,
        )
        alias_name(image, argument="image")
        origin: AsyncImageCalls | SimpleStreams = (
            source if isinstance(source, SimpleStreams) else self._source_calls(source)
        )
        copier = AsyncCopier(self._calls)
        held = await AsyncEnsurer(self._calls, copier).ensure(image, origin, options)
        # Only what differs is written (None: keep it), so a held image is left alone.
        public, auto_update, profiles = (
            None if options.public in (None, held.public) else options.public,
            None if options.auto_update in (None, held.auto_update) else options.auto_update,
            None if options.profiles in (None, held.profiles) else options.profiles,
        )
        if (public, auto_update, profiles) == (None, None, None):
            return held
        return await self.update(
            held.fingerprint, public=public, auto_update=auto_update, profiles=profiles
        )

    def _source_calls(self, source: object) -> AsyncImageCalls:
        """The requests of a source client, refused unless it is one of this flavour."""
        images = getattr(source, "images", None)
        if not isinstance(images, AsyncImagesAPI):
            raise InvalidInputError(
                f"source must be an {type_name(self).removesuffix('ImagesAPI')}Client of the "
                "server to copy from (the same kind as this client), or a SimpleStreams image "
                f"server, got {type_name(source)}"
            )
        return images._calls

    # ----------------------------------------------------------------------------------------
    # Creating, changing and deleting.

    @overload
    async def create(
        self,
        image_data: ImageData | ImageBuild,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        *,
        wait: Literal[True],
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Image: ...

    @overload
    async def create(
        self,
        image_data: ImageData | ImageBuild,
        filename: str | None,
        public: bool,
        auto_update: bool,
        properties: dict[str, str] | None,
        wait: Literal[True],
        *,
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Image: ...

    @overload
    async def create(
        self,
        image_data: ImageData | ImageBuild,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        wait: Literal[False] = False,
        *,
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Operation: ...

    @overload
    async def create(
        self,
        image_data: ImageData | ImageBuild,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        wait: bool = False,
        *,
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Image | Operation: ...

    async def create(
        self,
        image_data: ImageData | ImageBuild,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        wait: bool = False,
        *,
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> Image | Operation:
        """Upload an image; return the new Image (wait=True) or the upload's Operation.

        image_data is the image: bytes, a path, a binary file object, an iterable of bytes
        chunks (an async iterable too, with AsyncClient), or an ImageBuild (an image made
        from local files as it is sent: a VM build supplies its disk as ``rootfs`` itself; a
        ``metadata_only`` build needs ``rootfs``). Everything is streamed, never read
        into memory whole; give sizes (paths, regular files, bytes) and the body carries a
        Content-Length, which is much faster than a chunked body.

        A unified image is one tarball. For a split image, image_data is the metadata tarball
        and ``rootfs`` the root file system; ``type="virtual-machine"`` sends it as a VM disk
        (``rootfs.img``). filename is the image's file name (default: the source file's name).

        properties are merged over those in the image's metadata.yaml. They, auto_update and
        aliases are applied once the image is stored (Incus ignores auto_update on uploads,
        its properties header can crash incusd, and its aliases header can store the image
        while reporting failure). If one cannot be applied, the image is deleted again and
        the error says so. Aliases already taken, and profiles that do not exist, are refused
        before anything is uploaded.

        reuse=True moves an alias already taken to the new image instead, as the last step,
        once the image is stored and verified (the image it pointed at stays). An alias is
        moved only if it is still as it was read before the upload (``PATCH`` with its ETag
        as If-Match): one changed in between is left as it is, and PreconditionFailedError
        says so; the new image then stays (``left_behind`` is ``STORED``), and so do the
        aliases moved before. A failure while moving never deletes the new image.

        Waiting follows the one rule (README, "What waiting means"): wait=True returns the
        Image once it is stored, verified and its settings and aliases applied; timeout bounds
        that wait. wait=False returns the upload's Operation once the bytes are sent; when
        settings or aliases were given, they are applied (and the image verified) when that
        Operation is waited for with ``operations.wait()``.

        fingerprint is the SHA-256 you expect; the server refuses the upload if the bytes
        differ (ChecksumMismatchError; nothing is stored). A call that waits also hashes the
        bytes sent (as they stream, or, for sources that can be read again, by reading them
        again while incusd processes the upload); a server that reports another fingerprint
        raises ChecksumMismatchError, and the image it stored is deleted again (unless it was
        there before). Image data that cannot be read while it is sent raises
        ImageDataError (its ``__cause__`` is the OSError). What a failure left behind is the
        error's ``left_behind`` and a note.

        progress(done, total) is called as the bytes go (total None when unknown).

        An image that is already stored raises ImageExistsError (its ``fingerprint`` names
        it); a failed upload raises OperationError with the server's message.
        """
        from .._transfer.plan import prepare_upload
        from ._importing import AsyncImporter

        reuse = boolean(reuse, "reuse")
        prepared = prepare_upload(
            image_data,
            rootfs,
            filename=filename,
            public=public,
            auto_update=auto_update,
            properties=properties,
            wait=wait,
            image_type=type,
            aliases=aliases,
            profiles=profiles,
            fingerprint=fingerprint,
            progress=progress,
            accept_async=async_flavour.accepts_async_iterables,
        )
        budget = WaitBudget(timeout)
        importer = AsyncImporter(self._calls, f"upload image {prepared.plan.description}")
        return await importer.upload(prepared, wait=wait, budget=budget, reuse=reuse)

    async def delete(
        self, fingerprint: str, wait: bool = False, *, timeout: float | None = None
    ) -> Operation:
        """Delete the image and return the deletion's Operation: finished with wait=True (it
        is gone; failures raise; timeout bounds the wait), running with wait=False."""
        prefix = fingerprint_prefix(fingerprint)
        wait = boolean(wait, "wait")
        return await self._calls.delete(prefix, wait=wait, budget=WaitBudget(timeout))

    async def update(
        self,
        fingerprint: str,
        properties: dict[str, str] | None = None,
        wait: bool | None = None,
        *,
        public: bool | None = None,
        auto_update: bool | None = None,
        profiles: Sequence[str] | None = None,
        expires_at: datetime | None = None,
    ) -> Image:
        """Change the image's writable fields and return the updated Image.

        properties, when given, replace the image's properties (``{}`` removes them all);
        public, auto_update, profiles (``[]``: none) and expires_at (an aware datetime; Incus
        cannot remove an expiry once set) change only when given. Everything not given is
        kept: when a field only a full replacement (PUT) can set is given, everything else is
        sent back as it was read. ``update(fp)`` changes nothing and returns the Image.

        Changes are sent with If-Match, so a concurrent change to public, auto_update or the
        properties is never overwritten: the image is re-read and the change retried, a few
        times at most, then PreconditionFailedError is raised. (Incus's ETag does not cover
        profiles and expires_at.)

        ``wait`` is deprecated and does nothing: Incus applies updates at once, and the call
        returns only once the change is there. Passing it warns (DeprecationWarning).
        """
        from .._requests import ImageChanges

        prefix = fingerprint_prefix(fingerprint)
        changes = ImageChanges(
            properties=None if properties is None else properties_map(properties),
            public=optional_boolean(public, "public"),
            auto_update=optional_boolean(auto_update, "auto_update"),
            profiles=None if profiles is None else names_list(profiles, "profiles", profile_name),
            expires_at=aware_datetime(expires_at, "expires_at"),
        )
        if wait is not None:
            boolean(wait, "wait")
            warnings.warn(
                "update(..., wait=) is deprecated and does nothing: Incus applies updates at "
                "once, and update() returns once the change is there",
                DeprecationWarning,
                stacklevel=2,
            )
        if changes.empty:
            return await self.get(prefix)
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            current, etag = await self._calls.get(prefix)
            action = f"update image '{current.fingerprint}'"
            try:
                await self._calls.write(
                    current.fingerprint, changes.body_for(current), action, etag
                )
            except PreconditionFailedError as exc:
                if attempt == UPDATE_ATTEMPTS:
                    failure = exc._amended(
                        f"{exc} The image changed under every one of {UPDATE_ATTEMPTS} attempts.",
                        fingerprint=current.fingerprint,
                    )
                    raise note_left_behind(
                        failure, LeftBehind.NOTHING, "nothing was written"
                    ) from exc
                continue
            updated = await self.get(current.fingerprint)
            # incusd checks If-Match, then reads and writes the image without a lock: a writer
            # racing with ours can still put its stale copy back. Ours is then done again.
            if changes.seen_in(updated):
                return updated
        raise PreconditionFailedError(
            f"Could not update image '{prefix}' on {self._connection.server}: another writer "
            f"undid the change each of {UPDATE_ATTEMPTS} times",
            server=self._connection.server,
        )

    @overload
    async def publish(
        self,
        source: str,
        *,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        properties: dict[str, str] | None = None,
        public: bool = False,
        compression: str | None = None,
        expires_at: datetime | None = None,
        force: bool = False,
        progress: ProgressCallback | None = None,
        wait: Literal[True] = True,
        timeout: float | None = None,
    ) -> Image: ...

    @overload
    async def publish(
        self,
        source: str,
        *,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        properties: dict[str, str] | None = None,
        public: bool = False,
        compression: str | None = None,
        expires_at: datetime | None = None,
        force: bool = False,
        progress: ProgressCallback | None = None,
        wait: Literal[False],
        timeout: float | None = None,
    ) -> Operation: ...

    @overload
    async def publish(
        self,
        source: str,
        *,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        properties: dict[str, str] | None = None,
        public: bool = False,
        compression: str | None = None,
        expires_at: datetime | None = None,
        force: bool = False,
        progress: ProgressCallback | None = None,
        wait: bool,
        timeout: float | None = None,
    ) -> Image | Operation: ...

    async def publish(
        self,
        source: str,
        *,
        aliases: Sequence[str] | None = None,
        reuse: bool = False,
        properties: dict[str, str] | None = None,
        public: bool = False,
        compression: str | None = None,
        expires_at: datetime | None = None,
        force: bool = False,
        progress: ProgressCallback | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Image | Operation:
        """Make an image of an instance (``"c1"``) or a snapshot (``"c1/snap0"``); return the
        new Image (wait=True) or the Operation that makes it.

        properties are merged over the instance's image properties; aliases are created once
        the image exists (taken ones are refused before anything is done, unless reuse=True
        moves them to the new image: see ``create()``); public and
        expires_at (an aware datetime) set the image's. compression names the algorithm
        Incus packs with (``"none"``, ``"gzip"``, ``"zstd"``, ...; None: the server's
        default, gzip, which takes many times longer than ``"none"`` on big instances).

        Waiting follows the one rule (README, "What waiting means"): wait=True returns the
        Image once it exists and its aliases are created; timeout bounds all the waiting.
        wait=False returns the Operation that packs the image at once; the aliases are
        created when it is waited for with ``operations.wait()``.

        A running instance is refused with ConflictError, unless force=True: then it is
        stopped, published, and started again (also when publishing fails). force=True needs
        wait=True (InvalidInputError otherwise, before anything is done): the instance must be
        started again once the image is made, whoever waits. progress(done, None) reports the
        bytes packed so far, and the image's size at the end.
        """
        from ._publishing import AsyncPublisher, publish_options

        options = publish_options(
            aliases=aliases,
            reuse=reuse,
            properties=properties,
            public=public,
            compression=compression,
            expires_at=expires_at,
            force=force,
            progress=progress,
            wait=wait,
            timeout=timeout,
        )
        return await AsyncPublisher(self._calls).publish(source, options)

    # ----------------------------------------------------------------------------------------
    # Exporting.

    async def export(
        self,
        fingerprint: str,
        target_path: str | os.PathLike[str],
        *,
        secret: str | None = None,
        progress: ProgressCallback | None = None,
        allow_unverified: bool = False,
    ) -> builtins.list[Path]:
        """Download the image to disk and return the files written.

        A unified image gives one file at target_path; a split image gives the metadata at
        target_path and the rootfs at target_path + ".root". When target_path is an existing
        directory, the server's file names are used (reduced to safe base names that cannot
        leave the directory). A target_path ending in a separator (``"out/"``) always names a
        directory: if it does not exist it is made, with its missing parents, as ``mkdir -p``
        would (mode 0o755 under the umask), and removed again if the export fails.

        The body is streamed to temporary files beside the targets and renamed only once the
        SHA-256 of everything received matches the fingerprint; on any failure or
        interruption nothing is left under the target names and no temporary file remains.

        Some images cannot be checked that way: Incus marks OCI images (``X-Incus-Type:
        oci``), whose fingerprint is not the hash of their export. They are refused with
        TransferError before anything is written, unless you pass ``allow_unverified=True``,
        which accepts such an image unchecked; every other image is still verified.

        secret is a download secret (see get()) for a private image this client is not
        trusted to read. progress(done, total) is called as the image's bytes arrive.
        """
        from .._transfer.export import ExportReceiver
        from .._transfer.files import check_export_target
        from ._bodies import receive_export

        prefix = fingerprint_prefix(fingerprint)
        target = check_export_target(target_path)
        callback(progress, "progress")
        boolean(allow_unverified, "allow_unverified")
        secret = _optional_secret(secret)
        image, _ = await self._calls.get(prefix, secret=secret)
        server = self._connection.server
        action = f"export image '{image.fingerprint}' to {str(target)!r}"
        call = api.export_image(image.fingerprint, action=action, secret=secret)

        def receiver_for(response: httpx.Response) -> ExportReceiver:
            return ExportReceiver(
                target,
                image.fingerprint,
                content_type=response.headers.get("content-type"),
                content_disposition=response.headers.get("content-disposition"),
                unverifiable=response.headers.get("x-incus-type", "").lower() == "oci",
                allow_unverified=allow_unverified,
                total=image.size,
                progress=progress,
                failure_context=f"Could not {action} on {server}",
                server=server,
            )

        return await receive_export(
            self._connection,
            call,
            receiver_for,
            interruption=lambda received: (
                f"the export of image {image.fingerprint} to {str(target)!r} was "
                f"interrupted after {received} of {image.size} bytes; nothing was written"
            ),
        )

    # ----------------------------------------------------------------------------------------
    # Aliases.

    async def create_alias(
        self, name: str, target: str, description: str | None = None
    ) -> ImageAlias:
        """Create an alias pointing at the image target (fingerprint or prefix)."""
        from .._requests import ImageAliasesPost

        name = new_alias_name(name)
        fields = alias_fields(target, description)
        await self._calls.create_alias(
            ImageAliasesPost(name=name, **fields),
            f"create alias {name!r} for image '{fields['target']}'",
        )
        return await self.get_alias(name)

    async def get_alias(self, name: str) -> ImageAlias:
        """Return the alias with this name."""
        return await self._calls.get_alias(alias_name(name))

    async def get_by_alias(self, name: str, *, type: str | None = None) -> Image:
        """Return the image an alias points at (two requests at most).

        type ("container" or "virtual-machine") refuses an alias of the other kind with
        NotFoundError.
        """
        name = alias_name(name)
        if type is not None:
            choice(type, "type", IMAGE_TYPES)
        alias = await self._calls.get_alias(name)
        if type is not None and alias.type and alias.type != type:
            raise NotFoundError(
                f"Could not get the {type} image of alias {name!r} on {self._connection.server}: "
                f"the alias points at a {alias.type} image",
                server=self._connection.server,
            )
        image, _ = await self._calls.get(alias.target)
        return image

    async def list_aliases(self) -> ImageAliasList:
        """Return every alias (of the client's project), sorted by name (code point order), as
        an ImageAliasList (a list that notebooks show as a table)."""
        call = api.list_aliases()
        envelope = await self._connection.request(call)
        aliases = structure_list(call, self._connection.server, envelope.metadata, ImageAlias)
        return ImageAliasList(sorted(aliases, key=lambda alias: alias.name))

    async def rename_alias(self, name: str, new_name: str) -> ImageAlias:
        """Rename an alias; return it under its new name."""
        from .._requests import ImageAliasesEntryPost

        name = alias_name(name)
        new_name = new_alias_name(new_name, argument="new_name")
        await self._connection.request(
            api.rename_alias(name, new_name, ImageAliasesEntryPost(name=new_name))
        )
        return await self.get_alias(new_name)

    async def update_alias(
        self, name: str, target: str, description: str | None = None
    ) -> ImageAlias:
        """Point the alias at target; description=None keeps the description, "" clears it."""
        from .._requests import ImageAliasPatch

        name = alias_name(name)
        fields = alias_fields(target, description)
        # PATCH changes only the fields sent, so an omitted description is kept.
        await self._connection.request(
            api.update_alias(name, fields["target"], ImageAliasPatch(**fields))
        )
        return await self.get_alias(name)

    async def delete_alias(self, name: str) -> None:
        """Delete the alias (the image stays)."""
        name = alias_name(name)
        await self._connection.request(api.delete_alias(name))

    # ----------------------------------------------------------------------------------------
    # Watching.

    def watch(
        self, *, all_projects: bool = False, reconnect: bool = True
    ) -> AsyncEventStream[ImageEvent]:
        """Watch the images and aliases change: an event stream of ``ImageEvent``s.

        Use it as a context manager and iterate over it::

            async with client.images.watch() as changes:
                async for change in changes:  # ImageEvent or EventGap
                    print(change)

        Each ``ImageEvent`` says what happened (``action``: ``image-created``,
        ``image-updated``, ``image-deleted``, ``image-refreshed``, ``image-alias-created``,
        ...) to which image (``fingerprint``) or alias (``alias``, and ``old_alias`` for a
        rename), in which ``project``, by whom, and when. An ``EventGap`` says events may
        have been missed while the stream was lost (then read what you need again). Only the
        client's project is watched; ``all_projects=True`` watches every project. See
        ``client.events()`` for how the stream reconnects and ends.
        """
        from .._events import image_change
        from .events import AsyncEventStream

        return AsyncEventStream(
            self._connection,
            types=("lifecycle",),
            all_projects=boolean(all_projects, "all_projects"),
            reconnect=boolean(reconnect, "reconnect"),
            keep=image_change,
            label="images.watch()",
        )
