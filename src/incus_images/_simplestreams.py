"""A public image server in the simplestreams format, as a source of copies."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

import attrs

from ._errors import InvalidInputError

__all__ = ["SimpleStreams"]

#: Longer than any certificate chain an image server presents.
_MAX_CERTIFICATE_CHARS = 64 * 1024


@attrs.frozen(init=False)
class SimpleStreams:
    """A simplestreams image server (such as the incus CLI's ``images:`` remote), named as the
    source of ``images.copy()``: the target daemon downloads from it itself.

    ``url`` is the server's HTTPS address (``https://images.example[/path]``). ``certificate``
    is the server's certificate as PEM text, for a server whose certificate no public CA
    signed; the daemon then trusts exactly that certificate.
    """

    url: str
    certificate: str | None

    def __init__(self, url: str, *, certificate: str | None = None) -> None:
        self.__attrs_init__(url=_server_url(url), certificate=_pem(certificate))


def _server_url(url: object) -> str:
    if not isinstance(url, str) or not url.isprintable():
        raise InvalidInputError(f"url must be a printable string, got {url!r:.100}")
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        raise InvalidInputError(
            f"url {url!r:.100}: a simplestreams server is reached over HTTPS, e.g. "
            "https://images.example"
        )
    if parts.query or parts.fragment or "@" in parts.netloc or " " in url:
        raise InvalidInputError(
            f"url {url!r:.100}: give scheme, host, port and path only (no user, query or fragment)"
        )
    try:
        parts.port  # noqa: B018 - raises for a port out of range
    except ValueError as exc:
        raise InvalidInputError(f"url {url!r:.100}: {exc}") from None
    return url.rstrip("/")


def _pem(certificate: object) -> str | None:
    if certificate is None:
        return None
    if not isinstance(certificate, str) or len(certificate) > _MAX_CERTIFICATE_CHARS:
        raise InvalidInputError("certificate must be the server's certificate as PEM text")
    try:
        ssl.PEM_cert_to_DER_cert(certificate.strip())
    except (ValueError, UnicodeError):
        raise InvalidInputError(
            "certificate is not a PEM certificate (-----BEGIN CERTIFICATE----- ...); pass "
            "the certificate's text, not its path"
        ) from None
    return certificate
