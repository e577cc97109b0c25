"""Trust tokens (``incus config trust add``), decoded with bounds: input an attacker may
have written."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from datetime import UTC, datetime

import attrs

from .._errors import InvalidInputError
from .._validate import text

#: A token of a server listening on a wildcard address lists every address of the machine;
#: a few dozen make a token of a few KiB.
_MAX_TOKEN_CHARS = 64 * 1024
_MAX_TOKEN_ADDRESSES = 64
_HEX_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_HOSTNAME_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")


# --------------------------------------------------------------------------------------------
# Trust tokens.


@attrs.frozen(kw_only=True)
class TrustToken:
    """A decoded certificate add token (``incus config trust add NAME`` prints one)."""

    #: The token as it is sent back to the server.
    encoded: str
    #: The name the server gives the client's certificate.
    client_name: str
    #: SHA-256 of the server certificate (DER), lower-case hex.
    fingerprint: str
    #: Where the server listens, as ``host:port``.
    addresses: tuple[str, ...]
    secret: str = attrs.field(repr=False)
    #: None: the token does not expire.
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at


def _bad_token(detail: str) -> InvalidInputError:
    return InvalidInputError(
        f"not a usable trust token: {detail} (a token is what `incus config trust add NAME` "
        "prints on the server)"
    )


def decode_token(value: object) -> TrustToken:
    """Decode a trust token: base64 of a JSON object with ``client_name``, ``fingerprint``,
    ``addresses``, ``secret`` and ``expires_at`` (lxc/incus ``shared/api/certificate.go``).
    Everything in it is checked: it is input anyone may have written."""
    raw = text(value, "token", empty=False)
    if len(raw) > _MAX_TOKEN_CHARS:
        raise _bad_token(f"it is longer than {_MAX_TOKEN_CHARS} characters")
    # Go's base64 decoder skips line breaks, so a token wrapped by a terminal still works.
    encoded = re.sub(r"[\r\n]", "", raw.strip())
    try:
        decoded = base64.b64decode(encoded, validate=True)
        data = json.loads(decoded)
    except (binascii.Error, ValueError) as exc:
        raise _bad_token(f"it is not base64 of JSON ({exc})") from None
    except RecursionError:
        raise _bad_token("its JSON nests too deep") from None
    if not isinstance(data, dict):
        raise _bad_token("its JSON is not an object")
    for key, kind in (("client_name", str), ("fingerprint", str), ("secret", str)):
        if not isinstance(data.get(key), kind) or not data[key]:
            raise _bad_token(f"{key!r} must be a non-empty string")
    client_name, fingerprint, secret = data["client_name"], data["fingerprint"], data["secret"]
    if not client_name.isprintable() or len(client_name) > 1024:
        raise _bad_token("'client_name' is not a printable name")
    if not _HEX_FINGERPRINT.fullmatch(fingerprint):
        raise _bad_token("'fingerprint' is not a SHA-256 fingerprint (64 hex digits)")
    if not secret.isascii() or not secret.isprintable() or len(secret) > 1024:
        raise _bad_token("'secret' is not printable ASCII")
    addresses = data.get("addresses")
    if not isinstance(addresses, list) or not addresses:
        raise _bad_token("'addresses' must be a non-empty list")
    if len(addresses) > _MAX_TOKEN_ADDRESSES:
        raise _bad_token(f"it lists more than {_MAX_TOKEN_ADDRESSES} addresses")
    for address in addresses:
        host_port(address)
    return TrustToken(
        encoded=encoded,
        client_name=client_name,
        fingerprint=fingerprint.lower(),
        addresses=tuple(addresses),
        secret=secret,
        expires_at=_expiry(data.get("expires_at")),
    )


def _expiry(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise _bad_token("'expires_at' must be an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad_token(f"'expires_at' {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _bad_token(f"'expires_at' {value!r} has no time zone")
    # Go's zero time: the token does not expire.
    return None if parsed.year <= 1 else parsed


def host_port(value: object) -> tuple[str, int]:
    """``host:port`` of a token address: an IPv4 address, a bracketed IPv6 address or a DNS
    name, and a port; anything else (a scheme, a path, a user, a zone) is refused."""
    if not isinstance(value, str) or len(value) > 300:
        raise _bad_token(f"address {value!r:.100} is not host:port")
    host, _, port = value.rpartition(":")
    if not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise _bad_token(f"address {value!r:.100} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _bad_token(f"address {value!r:.100} is not host:port") from None
        if "%" in host:
            raise _bad_token(f"address {value!r:.100} is not host:port")
        return host[1:-1], int(port)
    labels = host.split(".")
    if len(host) > 253 or not all(_HOSTNAME_LABEL.fullmatch(label) for label in labels):
        raise _bad_token(f"address {value!r:.100} is not host:port")
    if labels[-1].isdigit():
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise _bad_token(f"address {value!r:.100} is not host:port") from None
    return host, int(port)
