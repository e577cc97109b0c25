"""A public image server in the simplestreams format: its address, as copies name their source.

:class:`SimpleStreamsSource` is what both flavours' catalogue readers (``SimpleStreams`` and
``AsyncSimpleStreams``, in ``_async/simplestreams.py``) are: a checked HTTPS URL and the
certificate to pin. ``images.copy()`` of either client takes any of them, since the daemon
downloads by itself and needs only the address.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Self, TypeVar
from urllib.parse import urlsplit

import attrs
import httpx

from ._errors import ConfigurationError, InvalidInputError

if TYPE_CHECKING:
    from ._remotes import Remote

T = TypeVar("T")

__all__ = ["SimpleStreams", "SimpleStreamsSource"]

_PEM_BLOCK = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n.*?\r?\n-----END CERTIFICATE-----", re.DOTALL
)
#: Longer than any certificate chain an image server presents.
_MAX_CERTIFICATE_CHARS = 64 * 1024


@attrs.frozen(init=False)
class SimpleStreamsSource:
    """A simplestreams image server (such as the incus CLI's ``images:`` remote), named as the
    source of ``images.copy()``: the target daemon downloads from it itself.

    ``url`` is the server's HTTPS address (``https://images.example[/path]``). ``certificate``
    is the server's certificate as PEM text, for a server whose certificate no public CA
    signed; the daemon then trusts exactly that certificate.
    """

    url: str
    certificate: str | None

    def __init__(self, url: str, *, certificate: str | None = None) -> None:
        self.__attrs_init__(url=server_url(url), certificate=pem_certificates(certificate))

    @classmethod
    def from_remote(
        cls, remote: str | Remote, *, config_dir: str | os.PathLike[str] | None = None
    ) -> Self:
        """The simplestreams remote of this name in the incus CLI's configuration (the
        built-in ``images`` too; see ``load_remotes()``), with the certificate the CLI
        pinned for it, if any."""
        return cls._configured(remote, config_dir, lambda url, pem: cls(url, certificate=pem))

    @staticmethod
    def _configured(
        remote: str | Remote,
        config_dir: str | os.PathLike[str] | None,
        make: Callable[[str, str | None], T],
    ) -> T:
        """``make(url, certificate)`` of the remote of this name in the incus CLI's
        configuration; what the configuration holds for it is refused as the configuration's
        fault (ConfigurationError), not the caller's."""
        from ._remotes import Remote, load_remotes, simplestreams_remote

        found = remote if isinstance(remote, Remote) else load_remotes(config_dir).remote(remote)
        url, certificate = simplestreams_remote(found)
        try:
            return make(url, certificate)
        except InvalidInputError as exc:
            # Not the caller's arguments: what the configuration holds for the remote.
            raise ConfigurationError(
                f"Remote {found.name!r} of the incus CLI's configuration cannot be used: {exc}"
            ) from None


#: The name the copy code (``_async/images.py``, ``_async/_copying.py``) gives the source.
SimpleStreams = SimpleStreamsSource


def server_url(url: object) -> str:
    if not isinstance(url, str) or not url.isprintable():
        raise InvalidInputError(f"url must be a printable string, got {url!r:.100}")
    try:
        parts = urlsplit(url)
        httpx.URL(url).host  # noqa: B018 - what httpx refuses is no URL to hand a daemon either
    except (ValueError, httpx.InvalidURL) as exc:
        raise InvalidInputError(f"url {url!r:.100}: {exc}") from None
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise InvalidInputError(
            f"url {url!r:.100}: a simplestreams server is reached over HTTPS, e.g. "
            "https://images.example"
        )
    if "?" in url or "#" in url or "@" in parts.netloc or " " in url:
        raise InvalidInputError(
            f"url {url!r:.100}: give scheme, host, port and path only (no user, query or fragment)"
        )
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"url {url!r:.100}: {exc}") from None
    if port == 0:
        raise InvalidInputError(f"url {url!r:.100}: port 0 is not a port a server listens on")
    return url.rstrip("/")


def pem_certificates(certificate: object) -> str | None:
    if certificate is None:
        return None
    if not isinstance(certificate, str) or len(certificate) > _MAX_CERTIFICATE_CHARS:
        raise InvalidInputError("certificate must be the server's certificate as PEM text")
    blocks = _PEM_BLOCK.findall(certificate)
    if not blocks:
        raise InvalidInputError(
            "certificate is not a PEM certificate (-----BEGIN CERTIFICATE----- ...); pass "
            "the certificate's text, not its path"
        )
    # A chain is several blocks; each must parse as a certificate on its own. The daemon is
    # handed only the blocks, re-encoded: no text around them, nothing that merely looks
    # like base64 between the markers.
    from cryptography import x509  # only here: a large import most clients never need
    from cryptography.hazmat.primitives.serialization import Encoding

    certificates = []
    for index, block in enumerate(blocks, 1):
        try:
            parsed = x509.load_pem_x509_certificate(block.encode("ascii"))
        except (ValueError, UnicodeError) as exc:
            raise InvalidInputError(
                f"certificate: PEM block {index} of {len(blocks)} is not a certificate ({exc})"
            ) from None
        certificates.append(parsed.public_bytes(Encoding.PEM).decode("ascii"))
    return "".join(certificates)
