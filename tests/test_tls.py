"""Unit tests of the TLS contexts (incus_images._tls): the name check that runs after the
handshake against OpenSSL's own, the refusal's shape, and client certificates from memory.

Handshakes here run in memory (two ssl.MemoryBIO pairs): real TLS, no socket.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest

from incus_images import InvalidInputError
from incus_images._tls import (
    ClientCertificate,
    client_context,
    trusted_certificates,
)
from tests.pki import Authority, Issued, self_signed


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("Names CA")


def handshake(
    client: ssl.SSLContext, shown: Issued, host: str, directory: Path
) -> ssl.SSLError | None:
    """A TLS handshake in memory with a server showing ``shown``; the client's error."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certificate, key = directory / "chain.pem", directory / "key.pem"
    certificate.write_bytes(shown.chain)
    key.write_bytes(shown.key)
    server_context.load_cert_chain(certificate, key)
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    tls = client.wrap_bio(client_in, client_out, server_hostname=host)
    server = server_context.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc
        else:
            return None
        server_in.write(client_out.read())
        with contextlib.suppress(ssl.SSLWantReadError):
            server.do_handshake()
        client_in.write(server_out.read())
    raise AssertionError("the handshake did not end")


# (DNS names, IP addresses, subject common name) of the certificate, and the host asked for.
NAME_CASES = [
    (["example.com"], [], "s", "example.com"),
    (["example.com"], [], "s", "EXAMPLE.com"),
    (["Example.COM"], [], "s", "example.com"),
    (["example.com"], [], "s", "www.example.com"),
    (["example.com"], [], "s", "example.com."),
    (["www.example.com"], [], "s", "example.com"),
    (["*.example.com"], [], "s", "www.example.com"),
    (["*.example.com"], [], "s", "WWW.Example.Com"),
    (["*.example.com"], [], "s", "a.b.example.com"),
    (["*.example.com"], [], "s", "example.com"),
    (["*.example.com"], [], "s", "x-.example.com"),
    (["*.example.com"], [], "s", "xn--bcher-kva.example.com"),
    (["*.com"], [], "s", "example.com"),
    (["w*.example.com"], [], "s", "www.example.com"),
    (["*w.example.com"], [], "s", "www.example.com"),
    (["*.*.example.com"], [], "s", "a.b.example.com"),
    (["a.*.example.com"], [], "s", "a.b.example.com"),
    (["*.-x.example.com"], [], "s", "a.-x.example.com"),
    (["*.x-.example.com"], [], "s", "a.x-.example.com"),
    (["*.xn--bcher-kva.example"], [], "s", "www.xn--bcher-kva.example"),
    (["xn--bcher-kva.example"], [], "s", "xn--bcher-kva.example"),
    (["localhost"], [], "s", "localhost"),
    (["127.0.0.1"], [], "s", "127.0.0.1"),
    ([], ["127.0.0.1"], "s", "127.0.0.1"),
    ([], ["127.0.0.1"], "s", "127.0.0.2"),
    ([], ["127.0.0.1"], "localhost", "localhost"),
    ([], ["::1"], "s", "::1"),
    ([], ["::1"], "s", "0:0:0:0:0:0:0:1"),
    ([], ["2001:db8::5"], "s", "2001:db8::5"),
    ([], ["2001:db8::5"], "s", "2001:db8::6"),
    (["other.example"], ["10.1.2.3"], "s", "127.0.0.1"),
    ([], [], "example.com", "example.com"),
    ([], [], "example.com", "other.com"),
    ([], [], "*.example.com", "www.example.com"),
    ([], [], "127.0.0.1", "127.0.0.1"),
    (["other.com"], [], "example.com", "example.com"),
]


@pytest.mark.parametrize(("dns", "ips", "subject", "host"), NAME_CASES)
def test_the_name_check_decides_as_openssl_does(
    ca: Authority, dns: list[str], ips: list[str], subject: str, host: str, tmp_path: Path
) -> None:
    shown = ca.issue(dns=dns, ips=ips, subject=subject)
    openssl = ssl.create_default_context(cadata=ca.certificate.decode())
    # Ours pins something else: the name decides, checked by the SDK after the handshake.
    ours = client_context(
        trusted_certificates(self_signed().certificate + ca.certificate, "the test's file")
    )
    expected = handshake(openssl, shown, host, tmp_path)
    got = handshake(ours, shown, host, tmp_path)
    assert (got is None) == (expected is None), (expected, got)
    if got is not None:
        assert isinstance(got, ssl.SSLCertVerificationError)
        assert got.verify_message == expected.verify_message  # type: ignore[union-attr]


def test_a_file_without_certificates_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInputError, match="the file f holds no PEM certificate"):
        trusted_certificates(b"not a certificate\n", "the file f")
    broken = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    with pytest.raises(InvalidInputError, match="the file f holds no usable PEM certificate"):
        client_context(trusted_certificates(broken, "the file f"))
    with pytest.raises(InvalidInputError, match="the file f holds no valid PEM certificate"):
        trusted_certificates(broken.replace(b"AAAA", b"AAA"), "the file f")


def test_the_first_certificate_is_the_pinned_one(ca: Authority) -> None:
    own = self_signed()
    trusted = trusted_certificates(b"# a comment\n" + own.certificate + ca.certificate, "f")
    assert trusted.pinned == own.der
    assert trusted.pem == (own.certificate + ca.certificate).decode()


def test_a_client_certificate_loads_from_memory() -> None:
    pair = self_signed(subject="user@host")
    context = client_context(False, ClientCertificate(pair.certificate, pair.key, "mine"))
    assert context.verify_mode == ssl.CERT_NONE
    combined = ClientCertificate(pair.certificate + pair.key, None, "mine")
    client_context(False, combined)
    other = self_signed()
    with pytest.raises(InvalidInputError, match="cannot load mine"):
        client_context(False, ClientCertificate(pair.certificate, other.key, "mine"))


def test_an_encrypted_key_is_refused_without_asking_for_a_password() -> None:
    from cryptography.hazmat.primitives import serialization

    pair = self_signed()
    key = serialization.load_pem_private_key(pair.key, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    # OpenSSL would prompt on the terminal and wait: the SDK refuses instead.
    with pytest.raises(InvalidInputError, match="cannot load mine: the key is encrypted"):
        client_context(False, ClientCertificate(pair.certificate, encrypted, "mine"))
