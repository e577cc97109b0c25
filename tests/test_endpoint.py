"""Unit tests of endpoint parsing, TLS set-up and socket discovery (incus_images._endpoint).

Discovery tests never look at the machine's real daemon paths: SYSTEM_SOCKETS is replaced by
paths under tmp_path, and every call gets an explicit environment.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from throwaway_incusd import make_client_certificate

import incus_images._endpoint as endpoint_module
from incus_images._endpoint import (
    MAX_CLUSTER_MEMBERS,
    Endpoint,
    candidate_sockets,
    discover_socket,
    learnt_members,
    parse_endpoint,
    parse_members,
)
from incus_images._errors import IncusConnectionError, InvalidInputError

# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two self-signed certificates with their keys, and a file holding cert + key."""
    directory = tmp_path_factory.mktemp("pki")
    cert, key = make_client_certificate(directory, "client")
    other_cert, other_key = make_client_certificate(directory, "other")
    combined = directory / "combined.pem"
    combined.write_text(Path(cert).read_text() + Path(key).read_text())
    junk = directory / "junk.pem"
    junk.write_text("not a certificate\n")
    return {
        "cert": cert,
        "key": key,
        "other_cert": other_cert,
        "other_key": other_key,
        "combined": str(combined),
        "junk": str(junk),
    }


@pytest.fixture
def system_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Stand-ins for /run/incus/unix.socket and /var/lib/incus/unix.socket."""
    paths = (str(tmp_path / "run-incus.sock"), str(tmp_path / "var-lib-incus.sock"))
    monkeypatch.setattr(endpoint_module, "SYSTEM_SOCKETS", paths)
    return paths


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[str]:
    """A unix socket that accepts connections."""
    path = str(tmp_path / "live.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    try:
        yield path
    finally:
        server.close()


@pytest.fixture
def bound_not_listening(tmp_path: Path) -> Iterator[str]:
    """A socket file nobody listens on (a daemon that died without cleaning up)."""
    path = str(tmp_path / "dead.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    try:
        yield path
    finally:
        sock.close()


# --------------------------------------------------------------------------------------------
# parse_endpoint: where


def test_none_means_discover_later() -> None:
    assert parse_endpoint(None) is None


@pytest.mark.parametrize(
    ("given", "path"),
    [
        ("unix:///run/incus/unix.socket", "/run/incus/unix.socket"),
        ("unix:/run/incus/unix.socket", "/run/incus/unix.socket"),
        ("/var/lib/incus/unix.socket", "/var/lib/incus/unix.socket"),
        ("UNIX:///tmp/x.sock", "/tmp/x.sock"),
        ("unix:///tmp/with%20space.sock", "/tmp/with space.sock"),
    ],
)
def test_unix_endpoints(given: str, path: str) -> None:
    result = parse_endpoint(given)
    assert result == Endpoint(display=f"unix://{path}", base_url="http://incus", socket_path=path)
    assert result.ssl_context is None


def test_a_path_object_is_a_unix_endpoint(tmp_path: Path) -> None:
    result = parse_endpoint(tmp_path / "unix.socket")
    assert result is not None
    assert result.socket_path == str(tmp_path / "unix.socket")


@pytest.mark.parametrize(
    "path", ["/tmp/a#1/unix.socket", "/tmp/a?b/unix.socket", "/tmp/100%41/unix.socket"]
)
def test_a_bare_path_is_taken_literally(path: str) -> None:
    result = parse_endpoint(path)
    assert result is not None
    assert result.socket_path == path


@pytest.mark.parametrize(
    ("given", "base_url"),
    [
        ("https://host", "https://host:8443"),
        ("https://host/", "https://host:8443"),
        ("https://Host.Example:9443", "https://host.example:9443"),
        ("https://127.0.0.1", "https://127.0.0.1:8443"),
        ("https://[::1]:9443", "https://[::1]:9443"),
        ("https://[::1]", "https://[::1]:8443"),
        ("HTTPS://host:443", "https://host:443"),
    ],
)
def test_https_endpoints(given: str, base_url: str) -> None:
    result = parse_endpoint(given)
    assert result is not None
    assert result.base_url == base_url
    assert result.display == base_url
    assert result.socket_path is None
    assert isinstance(result.ssl_context, ssl.SSLContext)


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("", "must not be empty"),
        ("http://host:8443", "HTTPS only"),
        ("ftp://host", "expected unix:///path/to/unix.socket or https://host"),
        ("host:8443", "expected unix:///path/to/unix.socket or https://host"),
        ("relative/unix.socket", "expected unix:///path/to/unix.socket or https://host"),
        ("https://host/1.0", "give only scheme, host and port"),
        ("https://host:8443/1.0/images", "give only scheme, host and port"),
        ("https://host?project=x", "give only scheme, host and port"),
        ("https://host#x", "give only scheme, host and port"),
        ("https://", "has no host name"),
        ("https://:8443", "has no host name"),
        ("https://host:99999", "out of range"),
        ("https://host:port", "could not be cast"),
        ("unix://host/run/x.sock", "is an absolute path"),
        ("unix:relative.sock", "is an absolute path"),
        ("unix://", "is an absolute path"),
    ],
)
def test_refused_endpoints(given: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as info:
        parse_endpoint(given)
    assert isinstance(info.value, ValueError)
    if given:
        assert repr(given) in str(info.value)


# --------------------------------------------------------------------------------------------
# parse_endpoint: TLS


def test_verification_is_on_by_default() -> None:
    result = parse_endpoint("https://host")
    assert result is not None
    context = result.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded


def test_verify_false_turns_verification_off_only_when_asked() -> None:
    result = parse_endpoint("https://host", verify=False)
    assert result is not None
    assert result.ssl_context is not None
    assert result.ssl_context.verify_mode == ssl.CERT_NONE
    assert result.ssl_context.check_hostname is False


def test_verify_with_a_certificate_file(pki: dict[str, str]) -> None:
    for verify in (pki["other_cert"], Path(pki["other_cert"])):
        result = parse_endpoint("https://host", verify=verify)
        assert result is not None
        context = result.ssl_context
        assert context is not None
        assert context.verify_mode == ssl.CERT_REQUIRED
        # OpenSSL's own name check is off: the SDK checks the name after the handshake,
        # unless the server shows the pinned certificate (tests/_async/test_unit_tls.py).
        assert context.check_hostname is False
        cas = context.get_ca_certs()
        assert len(cas) == 1
        assert cas[0]["subject"] == ((("commonName", "other"),),)


def test_verify_file_missing_or_unusable(tmp_path: Path, pki: dict[str, str]) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(InvalidInputError, match=r"verify= file .* does not exist") as info:
        parse_endpoint("https://host", verify=missing)
    assert missing in str(info.value)
    with pytest.raises(InvalidInputError, match="holds no PEM certificate"):
        parse_endpoint("https://host", verify=pki["junk"])
    with pytest.raises(InvalidInputError, match="is a directory, not a regular file"):
        parse_endpoint("https://host", verify=str(tmp_path))


@pytest.mark.parametrize("verify", [None, 1, 0, "", b"/etc/ssl/cert.pem"])
def test_verify_of_another_kind_is_refused(verify: object) -> None:
    with pytest.raises(InvalidInputError):
        parse_endpoint("https://host", verify=verify)  # type: ignore[arg-type]


def test_verify_ssl_context_is_used_as_given(pki: dict[str, str]) -> None:
    context = ssl.create_default_context()
    result = parse_endpoint("https://host", verify=context)
    assert result is not None
    assert result.ssl_context is context
    with pytest.raises(InvalidInputError, match="not both"):
        parse_endpoint("https://host", verify=context, cert=(pki["cert"], pki["key"]))


def test_client_certificate_pair_and_combined_file(pki: dict[str, str]) -> None:
    for cert in (
        (pki["cert"], pki["key"]),
        (Path(pki["cert"]), Path(pki["key"])),
        pki["combined"],
        Path(pki["combined"]),
    ):
        result = parse_endpoint("https://host", cert=cert, verify=pki["other_cert"])
        assert result is not None
        assert isinstance(result.ssl_context, ssl.SSLContext)


def test_client_certificate_files_must_exist(tmp_path: Path, pki: dict[str, str]) -> None:
    missing = str(tmp_path / "missing.key")
    with pytest.raises(InvalidInputError, match="client key file") as info:
        parse_endpoint("https://host", cert=(pki["cert"], missing))
    assert missing in str(info.value)
    with pytest.raises(InvalidInputError, match="client certificate file") as info:
        parse_endpoint("https://host", cert=(missing, pki["key"]))
    assert missing in str(info.value)
    with pytest.raises(InvalidInputError, match="client certificate file"):
        parse_endpoint("https://host", cert=missing)


def test_client_certificate_that_does_not_load(pki: dict[str, str]) -> None:
    # The key of another certificate.
    with pytest.raises(InvalidInputError, match="cannot load the client certificate") as info:
        parse_endpoint("https://host", cert=(pki["cert"], pki["other_key"]))
    assert pki["cert"] in str(info.value)
    with pytest.raises(InvalidInputError, match="cannot load the client certificate"):
        parse_endpoint("https://host", cert=pki["junk"])
    with pytest.raises(InvalidInputError, match="cannot load the client certificate"):
        parse_endpoint("https://host", cert=pki["cert"])  # no key in it


def test_client_certificate_tuple_of_the_wrong_length(pki: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError, match=r"\(certificate, key\) pair"):
        parse_endpoint("https://host", cert=(pki["cert"],))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"\(certificate, key\) pair"):
        parse_endpoint(
            "https://host",
            cert=(pki["cert"], pki["key"], pki["key"]),  # type: ignore[arg-type]
        )


def test_client_certificate_with_a_unix_endpoint_is_refused(pki: dict[str, str]) -> None:
    for endpoint in ("unix:///run/incus/unix.socket", "/run/incus/unix.socket", None):
        with pytest.raises(InvalidInputError, match="only used with an https:// endpoint"):
            parse_endpoint(endpoint, cert=(pki["cert"], pki["key"]))


# --------------------------------------------------------------------------------------------
# candidate_sockets


def test_candidates_in_the_cli_order(system_sockets: tuple[str, str]) -> None:
    environ = {"INCUS_SOCKET": "/a/unix.socket", "INCUS_DIR": "/b"}
    assert candidate_sockets(environ) == [
        "/a/unix.socket",
        "/b/unix.socket",
        *system_sockets,
    ]
    assert candidate_sockets({}) == list(system_sockets)
    assert candidate_sockets({"INCUS_SOCKET": "", "INCUS_DIR": ""}) == list(system_sockets)
    assert candidate_sockets({"INCUS_DIR": "/b"}) == ["/b/unix.socket", *system_sockets]


def test_candidates_keep_the_first_of_duplicates(
    tmp_path: Path, system_sockets: tuple[str, str]
) -> None:
    run, var = system_sockets
    # INCUS_DIR naming a system directory again: tried once, in its first place.
    environ = {"INCUS_DIR": str(tmp_path), "INCUS_SOCKET": var}
    run_dir_socket = str(tmp_path / "unix.socket")
    assert candidate_sockets(environ) == [var, run_dir_socket, run]
    assert candidate_sockets({"INCUS_SOCKET": run, "INCUS_DIR": os.path.dirname(run)}) == [
        run,
        os.path.join(os.path.dirname(run), "unix.socket"),
        var,
    ]
    assert candidate_sockets({"INCUS_SOCKET": run}) == [run, var]


def test_the_real_system_paths_are_those_of_the_incus_cli() -> None:
    # Only the constant is read here; nothing connects to it.
    assert endpoint_module.SYSTEM_SOCKETS == (
        "/run/incus/unix.socket",
        "/var/lib/incus/unix.socket",
    )


# --------------------------------------------------------------------------------------------
# discover_socket


def test_discovery_finds_incus_socket(system_sockets: tuple[str, str], listening: str) -> None:
    result = discover_socket({"INCUS_SOCKET": listening}, timeout=1.0)
    assert result == Endpoint.unix(listening)
    assert result.display == f"unix://{listening}"


def test_discovery_finds_incus_dir(tmp_path: Path, system_sockets: tuple[str, str]) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(directory / "unix.socket"))
    server.listen(1)
    try:
        environ = {"INCUS_SOCKET": str(tmp_path / "missing.sock"), "INCUS_DIR": str(directory)}
        result = discover_socket(environ, timeout=1.0)
        assert result.socket_path == str(directory / "unix.socket")
    finally:
        server.close()


def test_discovery_falls_through_to_the_system_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound_not_listening: str
) -> None:
    var = tmp_path / "var.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(var))
    server.listen(1)
    monkeypatch.setattr(endpoint_module, "SYSTEM_SOCKETS", (str(tmp_path / "run.sock"), str(var)))
    try:
        result = discover_socket({"INCUS_SOCKET": bound_not_listening}, timeout=1.0)
        assert result.socket_path == str(var)
    finally:
        server.close()


def test_discovery_prefers_the_first_candidate(
    tmp_path: Path, system_sockets: tuple[str, str], listening: str
) -> None:
    directory = tmp_path / "d"
    directory.mkdir()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(directory / "unix.socket"))
    other.listen(1)
    try:
        environ = {"INCUS_SOCKET": listening, "INCUS_DIR": str(directory)}
        assert discover_socket(environ, timeout=1.0).socket_path == listening
    finally:
        other.close()


def test_discovery_names_every_path_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bound_not_listening: str
) -> None:
    regular = tmp_path / "regular-file"  # exists, but is not a socket
    regular.write_bytes(b"")
    missing = str(tmp_path / "var-lib-incus.sock")
    monkeypatch.setattr(endpoint_module, "SYSTEM_SOCKETS", (str(regular), missing))
    incus_dir = tmp_path / "incus-dir"
    environ = {"INCUS_SOCKET": bound_not_listening, "INCUS_DIR": str(incus_dir)}
    tried = [bound_not_listening, str(incus_dir / "unix.socket"), str(regular), missing]
    with pytest.raises(IncusConnectionError) as info:
        discover_socket(environ, timeout=1.0)
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    positions = [message.index(path + " (") for path in tried]
    assert positions == sorted(positions)  # in the order tried
    assert f"{incus_dir / 'unix.socket'} (does not exist)" in message
    assert f"{missing} (does not exist)" in message
    assert f"{bound_not_listening} (Connection refused)" in message
    assert f"{regular} (Connection refused)" in message
    assert "Client('unix:///path/to/unix.socket')" in message


def test_discovery_with_nothing_set(system_sockets: tuple[str, str]) -> None:
    with pytest.raises(IncusConnectionError) as info:
        discover_socket({}, timeout=1.0)
    for path in system_sockets:
        assert f"{path} (does not exist)" in str(info.value)


def test_discovery_reads_os_environ_when_not_given(
    system_sockets: tuple[str, str], listening: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INCUS_SOCKET", listening)
    monkeypatch.delenv("INCUS_DIR", raising=False)
    assert discover_socket(timeout=1.0).socket_path == listening


# --------------------------------------------------------------------------------------------
# incus-user: a user who may not use the daemon's socket


@pytest.fixture
def incus_dir_with_user_socket(tmp_path: Path) -> Iterator[Path]:
    """An INCUS_DIR with both sockets listening, as incusd and incus-user leave it."""
    directory = tmp_path / "incus"
    directory.mkdir()
    servers = []
    for name in ("unix.socket", "unix.socket.user"):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(directory / name))
        server.listen(1)
        servers.append(server)
    try:
        yield directory
    finally:
        for server in servers:
            server.close()


def _writable_except(monkeypatch: pytest.MonkeyPatch, *unwritable: Path) -> None:
    """Act as a user who may not write the given sockets (tests run as root, who may)."""
    refused = {str(path) for path in unwritable}
    monkeypatch.setattr(endpoint_module, "_writable", lambda path: path not in refused)


USER = f"user-{os.geteuid()}"


@pytest.mark.parametrize(
    ("environ_names", "unwritable", "connected", "project"),
    [
        # incus-user confines each user to a project of their own, named after their uid.
        ("INCUS_DIR", ["unix.socket"], "unix.socket.user", USER),
        # Whoever may use the daemon's socket uses it.
        ("INCUS_DIR", [], "unix.socket", None),
        # $INCUS_SOCKET names one socket; the CLI does not second-guess it.
        ("INCUS_SOCKET=unix.socket.user", [], "unix.socket.user", None),
    ],
)
def test_incus_user_socket_is_used_by_whoever_may_not_use_the_daemons(
    incus_dir_with_user_socket: Path,
    system_sockets: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    environ_names: str,
    unwritable: list[str],
    connected: str,
    project: str | None,
) -> None:
    directory = incus_dir_with_user_socket
    _writable_except(monkeypatch, *(directory / name for name in unwritable))
    name, _, socket_name = environ_names.partition("=")
    environ = {name: str(directory / socket_name) if socket_name else str(directory)}
    result = discover_socket(environ, timeout=1.0)
    assert result.socket_path == str(directory / connected)
    assert result.default_project == project


def test_discovery_error_names_an_unusable_user_socket(
    incus_dir_with_user_socket: Path,
    system_sockets: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = incus_dir_with_user_socket
    daemon_socket, user_socket = directory / "unix.socket", directory / "unix.socket.user"
    _writable_except(monkeypatch, daemon_socket, user_socket)
    # The daemon socket still accepts the probe (root runs this test), so discovery ends
    # there; as a user it would be refused. What matters: the user socket is named as tried.
    monkeypatch.setattr(endpoint_module, "_answers", lambda path, timeout: "Permission denied")
    with pytest.raises(IncusConnectionError) as info:
        discover_socket({"INCUS_DIR": str(directory)}, timeout=1.0)
    message = str(info.value)
    assert f"{user_socket} (incus-user: permission denied)" in message
    assert f"{daemon_socket} (Permission denied)" in message


# --------------------------------------------------------------------------------------------
# verify= the server's own certificate: pinned


def test_verify_with_a_servers_own_certificate_pins_it_without_the_name(
    tmp_path: Path,
) -> None:
    # As Incus makes them: self-signed, not a CA, named after the host rather than the
    # address it is reached at. Such a certificate verifies nothing but itself.
    import subprocess

    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj", "/CN=root@node1",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    result = parse_endpoint("https://127.0.0.1:8443", verify=cert)
    assert result is not None and result.ssl_context is not None
    assert result.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert result.ssl_context.check_hostname is False
    # A handshake with a server showing that certificate succeeds; showing another fails.
    assert _handshake(result.ssl_context, cert, key) is None
    other_cert, other_key = make_client_certificate(tmp_path, "other")
    assert "certificate verify failed" in str(_handshake(result.ssl_context, other_cert, other_key))


def _handshake(
    context: ssl.SSLContext, server_cert: str | Path, server_key: str | Path
) -> Exception | None:
    """A TLS handshake on loopback with a server showing server_cert; the client's error."""
    import threading

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(server_cert, server_key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            try:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return None
            except ssl.SSLError as exc:
                return exc
    finally:
        thread.join(10)
        listener.close()


def test_verify_with_a_bundle_of_certificates_checks_names(
    tmp_path: Path, pki: dict[str, str]
) -> None:
    # Only the first certificate is pinned: a server showing the second one (self-signed,
    # named "other", not 127.0.0.1) verifies, and is refused for its name.
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(Path(pki["cert"]).read_text() + Path(pki["other_cert"]).read_text())
    result = parse_endpoint("https://127.0.0.1:8443", verify=bundle)
    assert result is not None and result.ssl_context is not None
    refused = _handshake(result.ssl_context, pki["other_cert"], pki["other_key"])
    assert "IP address mismatch, certificate is not valid for '127.0.0.1'" in str(refused)
    assert _handshake(result.ssl_context, pki["cert"], pki["key"]) is None


# --------------------------------------------------------------------------------------------
# Cluster members: the caller's list, and the cluster's own (issue 14)

LIKE = Endpoint.https("https://node1.test:8443", ssl_context=ssl.create_default_context())


def member(url: object) -> dict[str, object]:
    return {"server_name": "m", "url": url, "status": "Online"}


def test_learnt_members_are_checked_reached_alike_and_listed_once() -> None:
    learnt = learnt_members(
        [
            member("https://node2.test:8443"),
            member("https://NODE2.test"),  # the same member: host case, the default port
            member("https://[::1]:9443"),
            member("https://node1.test:8443/"),
        ],
        LIKE,
    )
    assert learnt.refused is None
    assert learnt.skipped == 0
    assert [endpoint.base_url for endpoint in learnt.endpoints] == [
        "https://node2.test:8443",
        "https://[::1]:9443",
        "https://node1.test:8443",
    ]
    assert all(endpoint.ssl_context is LIKE.ssl_context for endpoint in learnt.endpoints)
    assert all(endpoint.display == endpoint.base_url for endpoint in learnt.endpoints)


def test_learnt_members_leave_out_bad_entries_and_keep_the_rest() -> None:
    """One odd entry says nothing against the others, each checked on its own."""
    bad: list[object] = [
        member("http://node3.test"),
        member("unix:///run/incus/unix.socket"),
        member("https://node3.test:8443/1.0"),
        member("https://user@node3.test"),
        member("https://node3.test:0"),
        member("https://node3.test:99999"),
        member("https://" + "a" * 300),
        member("https://node\x00.test"),
        member(5),
        {"server_name": "no url"},
        "https://node3.test:8443",  # a bare URL is not what recursion=1 sends
        None,
        [member("https://node3.test")],
    ]
    learnt = learnt_members([*bad, member("https://node2.test")], LIKE)
    assert [endpoint.base_url for endpoint in learnt.endpoints] == ["https://node2.test:8443"]
    assert learnt.skipped == len(bad)
    assert learnt.skipped_examples == (
        "'http://node3.test'",
        "'unix:///run/incus/unix.socket'",
        "'https://node3.test:8443/1.0'",
    )


@pytest.mark.parametrize("answer", [None, {}, "https://node2.test", 5])
def test_learnt_members_that_are_no_list_are_refused(answer: object) -> None:
    learnt = learnt_members(answer, LIKE)
    assert learnt.endpoints == ()
    assert learnt.refused is not None
    assert "not a list" in learnt.refused


def test_learnt_members_past_the_cap_are_refused_unread() -> None:
    """No cluster has that many members: nothing of the answer is looked at, let alone tried."""
    answer = [object()] * (MAX_CLUSTER_MEMBERS + 1)  # entries no check could even read
    learnt = learnt_members(answer, LIKE)
    assert learnt.endpoints == ()
    assert learnt.skipped == 0
    assert learnt.refused == (
        f"it lists {MAX_CLUSTER_MEMBERS + 1} members, more than the {MAX_CLUSTER_MEMBERS} "
        "a client takes from a cluster"
    )
    at_the_cap = [member(f"https://10.0.{n // 256}.{n % 256}") for n in range(MAX_CLUSTER_MEMBERS)]
    assert len(learnt_members(at_the_cap, LIKE).endpoints) == MAX_CLUSTER_MEMBERS


def test_a_callers_member_list_has_a_cap_too() -> None:
    urls = [f"https://10.0.{n // 256}.{n % 256}" for n in range(MAX_CLUSTER_MEMBERS + 1)]
    with pytest.raises(InvalidInputError, match=f"at most {MAX_CLUSTER_MEMBERS}"):
        parse_members(urls, verify=False)
    members = parse_members(urls[:MAX_CLUSTER_MEMBERS], verify=False)
    assert len(members) == MAX_CLUSTER_MEMBERS
    # One TLS context for all: the members share the cluster's certificate.
    assert len({id(endpoint.ssl_context) for endpoint in members}) == 1


@pytest.mark.parametrize(
    "urls",
    [
        ["https://node1.test", "https://NODE1.test:8443"],
        ["https://node1.test", "https://node2.test", "https://node2.test:8443/"],
    ],
)
def test_a_member_given_twice_is_refused_however_written(urls: list[str]) -> None:
    with pytest.raises(InvalidInputError, match="given twice"):
        parse_members(urls, verify=False)
