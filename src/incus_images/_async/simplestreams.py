"""A simplestreams image server, read: its catalogue browsed, its images' files downloaded.

The catalogue (``streams/v1/index.json`` and the products files it names) is read on first
use, checked and parsed by ``_catalogue``, and kept for ``CATALOGUE_MAX_AGE_SECONDS``. The
requests go through the connection layer a client uses (its TLS, pool, deadlines and error
mapping).
"""

from __future__ import annotations

import builtins
import os
import time
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import httpx

from .._architectures import INCUS_ARCHITECTURES, incus_architecture
from .._catalogue.catalogue import INDEX_PATH, Catalogue, CatalogueError, ImageFile
from .._errors import (
    IncusConnectionError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    TransferError,
    UnexpectedResponseError,
    note_left_behind,
)
from .._flavours import async_flavour
from .._logging import logger
from .._models import Image, ImageAliasList, ImageList
from .._protocol import Call, ImplausibleJSON, loads, record_interruption, unexpected
from .._simplestreams import SimpleStreamsSource, pem_certificates, server_url
from .._validate import (
    IMAGE_TYPES,
    alias_name,
    callback,
    choice,
    fingerprint_prefix,
    image_filter,
    seconds,
    text,
)
from ._connection import AsyncConnection
from ._deadlines import call_deadline
from ._transport import raw_chunks

if TYPE_CHECKING:
    from .._catalogue.download import ImageDownload
    from .._remotes import Remote
    from .._transfer.reports import ProgressCallback

#: Seconds reading the catalogue may take, and a download may go without moving 64 KiB.
DEFAULT_TIMEOUT = 30.0

#: The largest index.json read. A real one lists product names: tens of KiB.
MAX_INDEX_BYTES = 16 * 1024 * 1024
#: The most bytes of products files one catalogue may have. images.linuxcontainers.org, the
#: largest public catalogue, has one products file of tens of MB (a few thousand images);
#: this is several times that, so a catalogue may grow a lot before it meets the limit, and
#: a hostile or endless answer is cut off before it can fill the client's memory.
MAX_PRODUCTS_BYTES = 128 * 1024 * 1024
#: The most JSON values a catalogue file may hold (counted before parsing, as for the
#: daemon's answers): about one per 16 bytes, as a catalogue is made, at MAX_PRODUCTS_BYTES.
MAX_CATALOGUE_VALUES = 8_000_000
#: How long a catalogue read is used before the next call reads it again: an hour, as incusd
#: caches a simplestreams catalogue (``CacheExpiry: time.Hour``). ``refresh()`` reads it at
#: once.
CATALOGUE_MAX_AGE_SECONDS = 3600.0

#: How soon a catalogue that could not be read again (the server out of reach) is asked for
#: again, while the one read before stays in use.
RETRY_SECONDS = 60.0

#: Files are asked for as they are stored: a compressed answer would be neither the bytes the
#: catalogue's hashes describe nor JSON.
_IDENTITY = {"Accept-Encoding": "identity"}


class _State:
    """What an image server object holds while it is used (not part of its value)."""

    def __init__(self) -> None:
        self.connection: AsyncConnection | None = None
        self.catalogue: Catalogue | None = None
        self.read_at = 0.0
        #: One catalogue read at a time: calls that need it meanwhile wait for that read.
        self.lock = async_flavour.slots(1)
        self.images: AsyncSimpleStreamsImages | None = None


@attrs.frozen(init=False)
class AsyncSimpleStreams(SimpleStreamsSource):
    """A simplestreams image server (such as the incus CLI's ``images:`` remote): its images
    browsed and downloaded here, and the source of ``images.copy()`` (of a client of either
    flavour: the target daemon then downloads from it itself).

    ``url`` is the server's HTTPS address (``https://images.example[/path]``). ``certificate``
    is the server's certificate as PEM text, for a server whose certificate no public CA
    signed: it is pinned, as the incus CLI pins a remote's certificate (a server showing
    exactly it is accepted whatever name it carries), and a daemon copying from the server is
    given it too.

    ``timeout`` (seconds; None: no limit) bounds reading the catalogue: the index and the
    products files are read whole within it, together. Downloads (``images.export()``) are
    not hurried: they fail once fewer than 64 KiB move within ``timeout`` seconds.

    The catalogue is read on first use and kept for an hour (``refresh()`` reads it again at
    once); when the server cannot be reached after that hour, the catalogue read last stays
    in use (a WARNING is logged) and the server is asked again a minute later, as incus
    does. Catalogue files larger than any real server's (16 MiB of index, 128 MiB of
    products) are refused, so a hostile server cannot fill the client's memory.

    Equal when their ``url``, ``certificate`` and ``timeout`` are. Use it as a context
    manager, or close it when done (its connections; it can be used again afterwards).
    """

    timeout: float | None = DEFAULT_TIMEOUT
    _state: _State = attrs.field(eq=False, repr=False, factory=_State)

    def __init__(
        self,
        url: str,
        *,
        certificate: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.__attrs_init__(
            url=server_url(url),
            certificate=pem_certificates(certificate),
            timeout=seconds(timeout, "timeout"),
        )

    @classmethod
    def from_remote(
        cls,
        remote: str | Remote,
        *,
        config_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> AsyncSimpleStreams:
        """The simplestreams remote of this name in the incus CLI's configuration (the
        built-in ``images`` too; see ``load_remotes()``), with the certificate the CLI
        pinned for it, if any."""
        timeout = seconds(timeout, "timeout")
        return cls._configured(
            remote, config_dir, lambda url, pem: cls(url, certificate=pem, timeout=timeout)
        )

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # Its value only: connections and the catalogue read stay behind.
        return partial(type(self), self.url, certificate=self.certificate, timeout=self.timeout), ()

    @property
    def images(self) -> AsyncSimpleStreamsImages:
        """The server's images: ``list()``, ``get()``, ``get_by_alias()``, ``list_aliases()``
        and ``export()``."""
        if self._state.images is None:
            self._state.images = AsyncSimpleStreamsImages(self)
        return self._state.images

    async def refresh(self) -> None:
        """Read the catalogue again now (it is otherwise read once an hour)."""
        async with self._state.lock:
            await self._read()

    async def aclose(self) -> None:
        """Close the connections (they open again when the server is used again)."""
        if self._state.connection is not None:
            await self._state.connection.aclose()

    async def __aenter__(self) -> AsyncSimpleStreams:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ----------------------------------------------------------------------------------------
    # The catalogue.

    @property
    def _base_path(self) -> str:
        return urlsplit(self.url).path

    def _connection(self) -> AsyncConnection:
        state = self._state
        if state.connection is None:
            # Here only: the TLS context costs a few ms, and a source only named in a copy
            # never connects.
            from .._endpoint import Endpoint
            from .._tls import client_context, trusted_certificates

            parts = urlsplit(self.url)
            if self.certificate is None:
                context = client_context(True)
            else:
                trusted = trusted_certificates(
                    self.certificate.encode("ascii"), "the certificate= of the image server"
                )
                context = client_context(trusted)
            endpoint = Endpoint(
                display=self.url,
                base_url=f"{parts.scheme}://{parts.netloc}",
                ssl_context=context,
                verify_pem=self.certificate,
            )
            state.connection = AsyncConnection(
                endpoint, project=None, timeout=self.timeout, ask_members=False
            )
        return state.connection

    async def _current(self) -> Catalogue:
        """The catalogue, read if it was not yet, or too long ago."""
        state = self._state
        async with state.lock:
            fresh = time.monotonic() - state.read_at < CATALOGUE_MAX_AGE_SECONDS
            if state.catalogue is None:
                await self._read()
            elif not fresh:
                try:
                    await self._read()
                except (IncusConnectionError, IncusTimeoutError) as exc:
                    # As incus does: a server out of reach leaves the catalogue read last in
                    # use (an explicit refresh() still fails), and is asked again later.
                    logger.warning(
                        "incus_images: %s; going on with the catalogue read %.0f s ago",
                        exc,
                        time.monotonic() - state.read_at,
                    )
                    state.read_at = time.monotonic() - CATALOGUE_MAX_AGE_SECONDS + RETRY_SECONDS
            assert state.catalogue is not None
            return state.catalogue

    async def _read(self) -> None:
        from .._architectures import local_architecture
        from .._catalogue.catalogue import build_catalogue, products_paths
        from .._catalogue.download import checked_path

        connection = self._connection()
        started = time.monotonic()
        index_call = _get(self._base_path + "/" + INDEX_PATH, "read the catalogue's index")
        index = await self._json(connection, index_call, MAX_INDEX_BYTES, started)
        try:
            paths = [
                checked_path(self._base_path, path, "a products file")
                for path in products_paths(index)
            ]
        except CatalogueError as exc:
            raise unexpected(index_call, self.url, str(exc)) from None
        files = []
        budget = MAX_PRODUCTS_BYTES
        for path in paths:
            call = _get(path, "read the catalogue's products")
            data, size = await self._json(connection, call, budget, started, sized=True)
            budget -= size
            files.append((call, data))
        architecture = local_architecture()
        try:
            catalogue = await async_flavour.run_blocking(
                lambda: build_catalogue(
                    [data for _, data in files], local_architecture=architecture
                )
            )
        except CatalogueError as exc:
            # Named by the file: the message names the product.
            call = files[0][0] if len(files) == 1 else index_call
            raise unexpected(call, self.url, str(exc)) from None
        self._state.catalogue = catalogue
        self._state.read_at = time.monotonic()

    async def _json(
        self,
        connection: AsyncConnection,
        call: Call,
        limit: int,
        started: float,
        *,
        sized: bool = False,
    ) -> Any:
        body = await self._fetch(connection, call, limit, started)
        try:
            data = await async_flavour.run_blocking(
                lambda: loads(body, max_values=MAX_CATALOGUE_VALUES)
            )
        except ImplausibleJSON as exc:
            raise unexpected(call, self.url, str(exc)) from None
        except ValueError:
            raise unexpected(call, self.url, f"not JSON: {body[:100]!r}") from None
        return (data, len(body)) if sized else data

    async def _fetch(
        self, connection: AsyncConnection, call: Call, limit: int, started: float
    ) -> bytes:
        """A catalogue file, read whole within what is left of the timeout, up to ``limit``
        bytes."""
        parts: list[bytes] = []
        size = 0
        try:
            with call_deadline(self._left(call, started)):
                async with connection.stream(call) as response:
                    _check_status(call, self.url, response)
                    # The stream's own deadline stops once its answer flows: this one goes on.
                    with call_deadline(self._left(call, started)):
                        async for chunk in raw_chunks(response):
                            size += len(chunk)
                            if size > limit:
                                raise unexpected(
                                    call,
                                    self.url,
                                    f"the catalogue is larger than {limit // (1024 * 1024)} "
                                    "MiB, more than any simplestreams server's",
                                )
                            parts.append(chunk)
        except IncusTimeoutError as exc:
            if self.timeout is None or "timeout=" in str(exc):
                raise
            raise exc._amended(
                f"{exc}; the catalogue is read within timeout={self.timeout:g} s"
            ) from exc
        return b"".join(parts)

    def _left(self, call: Call, started: float) -> float | None:
        if self.timeout is None:
            return None
        left = self.timeout - (time.monotonic() - started)
        if left <= 0:
            raise IncusTimeoutError(
                f"Could not {call.action} on {self.url}: the catalogue was not read within "
                f"timeout={self.timeout:g} s",
                server=self.url,
                method=call.method,
                url=call.path,
            )
        return left


class AsyncSimpleStreamsImages:
    """The images of a simplestreams server, as its catalogue describes them.

    Results are the models a server's images API gives (``Image``, ``ImageAlias``), read from
    the catalogue, which is read on first use (see the server's class). Every method that
    takes a fingerprint accepts the full SHA-256 or any unique prefix of it. The models are
    the catalogue's own until it is read again, shared by every call: change a copy
    (``attrs.evolve(image, properties={...})``), not them.
    """

    def __init__(self, server: AsyncSimpleStreams) -> None:
        self._server = server

    async def list(self, *, filter: str | None = None) -> ImageList:
        """Return the images: one per product version, architecture and type, ordered as
        incus orders them (by os, release, variant, the newest version first, then
        architecture), in an ImageList (a list that notebooks show as a table).

        Each has its fingerprint, architecture (Incus's name: ``x86_64``, ``aarch64``),
        type, size (both files of a split image together), properties (``os``, ``release``,
        ``variant``, ``architecture`` as the catalogue names it, ``serial``, ``description``,
        ...), creation date (the version's date) and expiry (the product's end of support; the
        Unix epoch when it gives none, as incus lists it),
        and its aliases as the incus CLI lists them: each product alias with the catalogue's
        architecture appended (``debian/12/arm64``) on the newest version's image, and the
        alias itself too when that image is of this machine's architecture.

        filter is Incus's filter language, as ``Client.images.list(filter=)`` sends it to a
        server: the same string selects the same images.

        A catalogue that is not what a simplestreams server sends (a product whose fields
        have the wrong JSON types, a fingerprint that is not a SHA-256) raises
        UnexpectedResponseError naming what is wrong.
        """
        from .._filter import compile_filter

        # Checked whole before anything is read: a filter incusd would refuse is refused here.
        matches = None if filter is None else compile_filter(image_filter(filter))
        images = (await self._server._current()).images
        if matches is None:
            return ImageList(images)
        return ImageList([image for image in images if matches(image)])

    async def get(self, fingerprint: str) -> Image:
        """Return the image with this fingerprint (or unique fingerprint prefix)."""
        from .._catalogue.lookup import image_by_fingerprint

        prefix = fingerprint_prefix(fingerprint)
        catalogue = await self._server._current()
        return image_by_fingerprint(catalogue, prefix, server=self._server.url)

    async def get_by_alias(
        self, name: str, *, type: str | None = None, architecture: str | None = None
    ) -> Image:
        """Return the image an alias names, resolved as incusd resolves it.

        type ("container" or "virtual-machine") None prefers a container image, as incusd
        does. architecture (``x86_64``, ``aarch64``, ...; the catalogue's names such as
        ``arm64`` are accepted too) None means this machine's architecture when the alias has
        an image for it, else the alias's only one. Of several versions, the newest.

        An alias with no image of that type and architecture (or images of several
        architectures, none this machine's) raises NotFoundError naming what it has.
        """
        from .._catalogue.lookup import image_by_alias

        name = alias_name(name)
        if type is not None:
            choice(type, "type", IMAGE_TYPES)
        wanted = None if architecture is None else _architecture(architecture)
        catalogue = await self._server._current()
        return image_by_alias(
            catalogue, name, image_type=type, architecture=wanted, server=self._server.url
        )

    async def list_aliases(self) -> ImageAliasList:
        """Return the aliases as incus lists them: each name once per image type, naming the
        newest image of this machine's architecture (else of another), sorted by name, as an
        ImageAliasList (a list that notebooks show as a table)."""
        from .._catalogue.lookup import alias_list

        return ImageAliasList(alias_list(await self._server._current()))

    async def export(
        self,
        fingerprint: str,
        target_path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
    ) -> builtins.list[Path]:
        """Download the image to disk and return the files written, as a server's
        ``images.export()`` writes them.

        A unified image gives one file at target_path; a split image (a container's
        metadata and rootfs, or a virtual machine's metadata and disk) gives the metadata at
        target_path and the rootfs or disk at target_path + ".root". When target_path is an
        existing directory, the catalogue's file names are used. A target_path ending in a
        separator (``"out/"``) always names a directory: if it does not exist it is made, with
        its missing parents, as ``mkdir -p`` would, and removed again if the export fails.

        Every path the catalogue gives is checked first (it must stay below the server's URL),
        then each file is streamed to a temporary file beside its target and checked against
        the catalogue's size and SHA-256, and the whole against the fingerprint, before
        anything is renamed into place. On any failure or interruption nothing is left under
        the target names and no temporary file remains. progress(done, total) is called as
        the bytes arrive.
        """
        from .._catalogue.download import ImageDownload, file_request_path
        from .._catalogue.lookup import image_by_fingerprint
        from .._transfer.files import check_export_target

        prefix = fingerprint_prefix(fingerprint)
        target = check_export_target(target_path)
        callback(progress, "progress")
        server = self._server
        catalogue = await server._current()
        image = image_by_fingerprint(catalogue, prefix, server=server.url)
        files = catalogue.files[image.fingerprint]
        action = f"export image '{image.fingerprint}' to {str(target)!r}"
        try:
            paths = [file_request_path(server._base_path, file) for file in files]
        except CatalogueError as exc:
            raise UnexpectedResponseError(
                f"Could not {action} from {server.url}: the catalogue is unusable: {exc}",
                server=server.url,
                fingerprint=image.fingerprint,
            ) from None

        def failure(detail: str, cls: type[TransferError]) -> TransferError:
            error = cls(
                f"Could not {action} from {server.url}: {detail}",
                server=server.url,
                fingerprint=image.fingerprint,
            )
            return note_left_behind(error, LeftBehind.NOTHING, "nothing was written")

        download = ImageDownload(
            target, image.fingerprint, files, progress=progress, failure=failure
        )
        connection = server._connection()
        started = time.monotonic()
        try:
            download.start()
            for file, path in zip(files, paths, strict=True):
                await _download_file(connection, server.url, path, file, download, action)
            download.verify()
            placed = download.place()
        except BaseException as exc:
            record_interruption(
                exc,
                LeftBehind.NOTHING,
                f"the export of image {image.fingerprint} to {str(target)!r} was interrupted "
                f"after {download.received} of {image.size} bytes; nothing was written",
                any_error=True,
            )
            raise
        finally:
            download.discard()
        logger.info(
            "%s from %s: %d bytes verified and renamed into place in %.1f s",
            action,
            server.url,
            download.received,
            time.monotonic() - started,
        )
        return placed


async def _download_file(
    connection: AsyncConnection,
    server: str,
    path: str,
    file: ImageFile,
    download: ImageDownload,
    action: str,
) -> None:
    call = _get(path, f"{action}: download its {file.role} file")
    async with connection.stream(call) as response:
        _check_status(call, server, response)
        download.open(file)
        async for chunk in connection.body(call, response):
            download.feed(chunk)
            if download.backlogged:
                await async_flavour.run_blocking(download.wait_for_room)
    download.close_file()


def _get(path: str, action: str) -> Call:
    return Call(method="GET", path=path, action=action, headers=_IDENTITY, project_scoped=False)


def _check_status(call: Call, server: str, response: httpx.Response) -> None:
    """Only a plain answer is the file (errors were raised already): a redirect is not
    followed, as a catalogue's files are below its own URL."""
    if response.status_code != 200:
        raise unexpected(
            call,
            server,
            f"HTTP {response.status_code} instead of the file (redirects are not followed)",
        )


def _architecture(value: object) -> str:
    name = text(value, "architecture", empty=False)
    found = incus_architecture(name)
    if found is None:
        raise InvalidInputError(
            f"architecture {name!r:.100} is not one Incus knows: " + ", ".join(INCUS_ARCHITECTURES)
        )
    return found
