"""TLS contexts: the one builder of every context the SDK connects with, and the one rule by
which a server is checked against certificates from a file.

The rule, as the incus CLI applies it to a remote's pinned certificate: the file's first
certificate is pinned, and a server showing exactly that certificate is accepted whatever
name it carries (Incus names its certificate after its host, not after the address it is
reached at). Any other certificate must chain to a certificate of the file and carry the
host name the client connects to (an IP address as an IP address entry). ``verify=FILE`` and
a remote's ``servercerts/<name>.crt`` and ``client.ca`` all go through it.

Python's ssl cannot say "this exact certificate, or the host name" in one context: OpenSSL
checks the name during the handshake for every certificate or for none. So OpenSSL verifies
the chain (against the file's certificates only) with its name check off, and the name check
runs right after the handshake, in the classes the context makes its TLS objects of
(``SSLContext.sslsocket_class`` for ``wrap_socket``, which the blocking flavour and the
certificate probe use; ``sslobject_class`` for ``wrap_bio``, which anyio and asyncio use).
A refusal there is raised from the handshake, as OpenSSL's own would be, so nothing is sent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterator
from typing import Any

import attrs

from ._small_files import Refusal, argument_file, read_small_file

_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----"
)
#: A DNS label as OpenSSL accepts it after a wildcard (no partial wildcards, no underscore).
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
#: What a wildcard may stand for: one label of letters, digits and hyphens (as OpenSSL).
_WILDCARD_LABEL = re.compile(r"[A-Za-z0-9-]+")
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH, which its own name check reports.
_HOSTNAME_MISMATCH = 62


@attrs.frozen
class TrustedCertificates:
    """Certificates from a PEM file to verify a server against (see the module's rule)."""

    #: The file's certificates as PEM text: what a daemon that connects to the same server
    #: (for a copy) is given to pin too.
    pem: str
    #: The first certificate (DER): the pinned one.
    pinned: bytes
    #: How messages name the file: ``the pinned server certificate /path/prod.crt``.
    where: str
    #: The file, when they were read from one, and how it is refused when a context cannot
    #: load them (an argument's file, or one of the incus CLI's configuration).
    path: str | None = None
    refuse: Refusal = attrs.field(default=argument_file, eq=False, repr=False)


@attrs.frozen
class ClientCertificate:
    """A client certificate and its key, as PEM bytes (the key may be in ``certificate``)."""

    certificate: bytes
    key: bytes | None
    #: How messages name it: ``the client certificate /path/client.crt (key /path/client.key)``.
    where: str
    #: The certificate's file, and how the pair is refused when a context cannot load it.
    path: str | None = None
    refuse: Refusal = attrs.field(default=argument_file, eq=False, repr=False)


def trusted_certificates(
    data: bytes, where: str, *, path: str | None = None, refuse: Refusal = argument_file
) -> TrustedCertificates:
    """The certificates of a PEM file's text (the file at ``path``, if any); the error
    ``refuse`` makes, naming ``where``, if it holds none, or a block that is not base64 (what
    else is wrong in one, a context that loads them refuses)."""
    blocks = _PEM_CERTIFICATE.findall(data.decode("ascii", errors="replace"))
    if not blocks:
        raise refuse(f"{where} holds no PEM certificate", path)
    try:
        pinned = ssl.PEM_cert_to_DER_cert(blocks[0])
        for block in blocks[1:]:
            ssl.PEM_cert_to_DER_cert(block)
    except ValueError:
        raise refuse(f"{where} holds no valid PEM certificate", path) from None
    # OpenSSL parses what base64 cannot judge when a context loads them (client_context).
    return TrustedCertificates(
        pem="\n".join(blocks) + "\n", pinned=pinned, where=where, path=path, refuse=refuse
    )


def read_trusted_certificates(
    path: str | os.PathLike[str], what: str, *, refuse: Refusal = argument_file
) -> TrustedCertificates:
    """The certificates of a PEM file (read as every small file is: ``_small_files``)."""
    name = os.fspath(path)
    return trusted_certificates(
        read_small_file(path, what, refuse=refuse), f"{what} {name}", path=name, refuse=refuse
    )


def read_client_certificate(
    certificate: str | os.PathLike[str],
    key: str | os.PathLike[str] | None,
    *,
    refuse: Refusal = argument_file,
) -> ClientCertificate:
    """A client certificate and key from PEM files (``key`` None: both in ``certificate``)."""
    where = f"the client certificate {os.fspath(certificate)}"
    if key is not None:
        where += f" (key {os.fspath(key)})"
    return ClientCertificate(
        certificate=read_small_file(certificate, "client certificate file", refuse=refuse),
        key=None if key is None else read_small_file(key, "client key file", refuse=refuse),
        where=where,
        path=os.fspath(certificate),
        refuse=refuse,
    )


def client_context(
    verify: TrustedCertificates | bool, client: ClientCertificate | None = None
) -> ssl.SSLContext:
    """A TLS context for a client: ``True`` verifies the server and its name against the
    system's CA bundle (the one httpx uses), ``False`` verifies nothing (only on explicit
    request), certificates from a file verify as the module's rule says."""
    if verify is True:
        import certifi

        context = ssl.create_default_context(cafile=certifi.where())
    elif verify is False:
        # Not create_default_context(): it loads the system's CA bundle (about 25 ms per
        # client), which a context that verifies nothing never reads.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            context = ssl.create_default_context(cadata=verify.pem)
        except ssl.SSLError as exc:
            raise verify.refuse(
                f"{verify.where} holds no usable PEM certificate: {exc}", verify.path
            ) from None
        context.check_hostname = False  # checked after the handshake, unless pinned
        # A pinned certificate need not be self-signed (the CLI pins whatever the server
        # showed): the file's certificates are trust anchors by themselves, as in the CLI.
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.sslsocket_class, context.sslobject_class = _checking_classes(verify.pinned)
    if client is not None:
        _load_client_certificate(context, client)
    return context


def _checking_classes(pinned: bytes) -> tuple[type[ssl.SSLSocket], type[ssl.SSLObject]]:
    """The TLS object classes of a context with this pinned certificate (DER)."""

    class PinnedOrNamedSocket(ssl.SSLSocket):
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            _check_server(self, pinned)

    class PinnedOrNamedObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            _check_server(self, pinned)

    return PinnedOrNamedSocket, PinnedOrNamedObject


def _check_server(tls: ssl.SSLSocket | ssl.SSLObject, pinned: bytes) -> None:
    """After a handshake whose chain OpenSSL verified: the pinned certificate, or the name."""
    if tls.server_side or tls.getpeercert(binary_form=True) == pinned:
        return
    host = tls.server_hostname
    if host is None or not certificate_names_match(tls.getpeercert(), host):
        # Worded as OpenSSL words its own name check, so that callers see one kind of refusal.
        kind = "IP address" if _address(host or "") else "Hostname"
        detail = f"{kind} mismatch, certificate is not valid for {host!r}."
        error = ssl.SSLCertVerificationError(
            1,
            f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {detail} (It is not "
            "the pinned certificate, the first of the verifying file.)",
        )
        error.verify_code = _HOSTNAME_MISMATCH
        error.verify_message = detail
        error.library, error.reason = "SSL", "CERTIFICATE_VERIFY_FAILED"
        raise error


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def certificate_names_match(certificate: Any, host: str) -> bool:
    """Whether a certificate (as ``SSLSocket.getpeercert()`` gives it) is valid for host, as
    OpenSSL's check with Python's settings decides (X509_check_host without partial
    wildcards, the subject's common name only without DNS names; X509_check_ip)."""
    if not isinstance(certificate, dict):
        return False
    alt_names = [
        (kind, value)
        for kind, value in certificate.get("subjectAltName", ())
        if isinstance(kind, str) and isinstance(value, str)
    ]
    address = _address(host)
    if address is not None:
        return any(
            kind == "IP Address" and _same_address(value, address) for kind, value in alt_names
        )
    names = [value for kind, value in alt_names if kind == "DNS"]
    if not names:
        names = [
            value
            for rdn in certificate.get("subject", ())
            for key, value in rdn
            if key == "commonName" and isinstance(value, str)
        ]
    return any(_dns_name_matches(name, host) for name in names)


def _same_address(value: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # Python gives an IPv6 entry as eight upper-case groups: compared as addresses.
    return _address(value.strip()) == address


def _dns_name_matches(pattern: str, host: str) -> bool:
    if "\x00" in pattern or not host:
        return False
    if not (pattern.isascii() and host.isascii()):
        return pattern == host
    if pattern.lower() == host.lower():
        return True
    # A wildcard is the whole leftmost label, before at least two more labels.
    if not pattern.startswith("*."):
        return False
    suffix = pattern[2:]
    if not all(_LABEL.fullmatch(label) for label in suffix.split(".")) or "." not in suffix:
        return False
    label, dot, rest = host.partition(".")
    return bool(dot and _WILDCARD_LABEL.fullmatch(label)) and rest.lower() == suffix.lower()


@contextlib.contextmanager
def _in_memory(data: bytes | None) -> Iterator[str | None]:
    """A path OpenSSL can open that holds data, in memory only (a key never touches a disk)."""
    if data is None:
        yield None
        return
    fd = os.memfd_create("incus-images-pem", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


class _EncryptedKey(Exception):
    """OpenSSL asked for a password: the key is encrypted."""


def _no_password() -> str:
    # Without a callback OpenSSL would prompt on the terminal and wait for an answer.
    raise _EncryptedKey


def _load_client_certificate(context: ssl.SSLContext, client: ClientCertificate) -> None:
    try:
        with _in_memory(client.certificate) as certfile, _in_memory(client.key) as keyfile:
            assert certfile is not None
            context.load_cert_chain(certfile, keyfile, password=_no_password)
    except _EncryptedKey:
        raise client.refuse(
            f"cannot load {client.where}: the key is encrypted (protected by a password); "
            "give a key without one",
            client.path,
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise client.refuse(f"cannot load {client.where}: {exc}", client.path) from exc
