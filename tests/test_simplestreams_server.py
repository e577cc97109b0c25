"""The local simplestreams server (scripts/simplestreams_server.py), and proof that a real
incusd accepts what it serves: copies by alias and by fingerprint, newer versions, refreshes.

The daemon tests use the session's throwaway incusd; every image they pull is deleted after
the test. Each test has a server of its own, with a URL of its own: incusd caches a catalogue
per server URL, so no test sees another's.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from simplestreams_server import (
    INDEX_PATH,
    PRODUCTS_PATH,
    SimpleStreamsServer,
    forget_daemon_catalogue,
)
from throwaway_incusd import ThrowawayIncusd
from tiny_image import split_image, unified_image

from tests.helpers import (
    deleted_afterwards,
    multipart_parts,
    sha256,
    stored_image,
    unique,
    wait_raw,
)

#: What incusd 6.0.4 writes in an operation's ``download_progress`` while it downloads from a
#: simplestreams server: the file, the percentage and the speed (lxc/incus shared/util/net.go).
PROGRESS = re.compile(r"(metadata|rootfs): (\d{1,3})% \(\d+(\.\d+)?[kMGTPE]?B/s\)")


@pytest.fixture
def server() -> Iterator[SimpleStreamsServer]:
    with SimpleStreamsServer() as server:
        yield server


@pytest.fixture
def pulled(raw_api: httpx.Client) -> Iterator[list[str]]:
    """Fingerprints appended here are deleted from the daemon after the test."""
    yield from deleted_afterwards(raw_api)


def address(server: SimpleStreamsServer) -> tuple[str, int]:
    split = urllib.parse.urlsplit(server.url)
    assert split.hostname is not None and split.port is not None
    return split.hostname, split.port


def https_client(server: SimpleStreamsServer) -> httpx.Client:
    """A client that trusts only the server's certificate, and checks it is valid for
    127.0.0.1 (the name in the URL), as incusd does when the certificate is pinned."""
    context = ssl.create_default_context(cadata=server.certificate_pem)
    return httpx.Client(base_url=server.url, verify=context, timeout=10)


def catalogue(server: SimpleStreamsServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """index.json and images.json, as a client reads them."""
    with https_client(server) as client:
        index = client.get(INDEX_PATH)
        products = client.get(PRODUCTS_PATH)
    assert index.status_code == products.status_code == 200
    assert index.headers["content-type"] == "application/json"
    return index.json(), products.json()


def pull_request(server: SimpleStreamsServer, **source: str) -> dict[str, Any]:
    return {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": server.url,
            "protocol": "simplestreams",
            "certificate": server.certificate_pem,
            **source,
        }
    }


def pull(raw_api: httpx.Client, server: SimpleStreamsServer, **source: str) -> str:
    """Have the daemon copy an image from the server; return the fingerprint it stored."""
    finished = wait_raw(raw_api, raw_api.post("/1.0/images", json=pull_request(server, **source)))
    assert finished["status_code"] == 200, finished
    return str(finished["metadata"]["fingerprint"])


def exported_parts(raw_api: httpx.Client, fingerprint: str) -> list[bytes]:
    """The files the daemon stored for a split image, read back through its export."""
    response = raw_api.get(f"/1.0/images/{fingerprint}/export")
    assert response.status_code == 200, response.text
    return [
        data for _, _, data in multipart_parts(response.headers["content-type"], response.content)
    ]


def operation_state(raw_api: httpx.Client, operation_url: str) -> dict[str, Any]:
    response = raw_api.get(operation_url)
    assert response.status_code == 200, response.text
    return dict(response.json()["metadata"])


# --------------------------------------------------------------------------------------------
# the server on its own


def test_catalogue_describes_a_split_image_as_incusd_reads_it(server: SimpleStreamsServer) -> None:
    metadata, rootfs = split_image()
    fingerprint = server.add_image(
        metadata, rootfs, aliases=["tiny/1", "tiny/one"], os="tiny", release="1"
    )
    assert fingerprint == sha256(metadata, rootfs)

    index, products = catalogue(server)
    (entry,) = index["index"].values()
    assert entry["datatype"] == "image-downloads"
    assert "/" + entry["path"] == PRODUCTS_PATH
    assert entry["products"] == list(products["products"])
    (product,) = products["products"].values()
    assert product["aliases"] == "tiny/1,tiny/one"
    assert (product["os"], product["release"], product["arch"]) == ("tiny", "1", "amd64")
    ((version_name, version),) = product["versions"].items()
    assert re.fullmatch(r"\d{8}\S*", version_name)
    items = version["items"]
    assert {item["ftype"] for item in items.values()} == {"incus.tar.xz", "root.tar.xz"}
    meta_item = items["incus.tar.xz"]
    assert meta_item["combined_rootxz_sha256"] == fingerprint
    with https_client(server) as client:
        for item, data in ((meta_item, metadata), (items["root.tar.xz"], rootfs)):
            assert (item["size"], item["sha256"]) == (len(data), sha256(data))
            assert client.get("/" + item["path"]).content == data


def test_certificate_is_valid_for_127_0_0_1_only(server: SimpleStreamsServer) -> None:
    host, port = address(server)
    assert host == "127.0.0.1"
    context = ssl.create_default_context(cadata=server.certificate_pem)
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1"),
    ):
        pass
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError, match="localhost"),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


def test_only_published_files_are_served(server: SimpleStreamsServer) -> None:
    metadata, rootfs = split_image()
    server.add_image(metadata, rootfs, aliases=["tiny"], os="tiny", release="1")
    context = ssl.create_default_context(cadata=server.certificate_pem)
    host, port = address(server)
    base = urllib.parse.urlsplit(server.url).path

    def status(method: str, path: str) -> int:
        # http.client sends the path as written, dot segments and all.
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()

    assert status("GET", base + INDEX_PATH) == 200
    for path in [
        INDEX_PATH,  # outside the server's URL
        "/",
        base,
        base + "/",
        base + "/streams/v1/",
        base + "/../../../../etc/passwd",
        base + "/images/../streams/v1/index.json",
        base + INDEX_PATH + "/",
    ]:
        assert status("GET", path) == 404, path
    assert status("POST", base + INDEX_PATH) == status("PUT", base + PRODUCTS_PATH) == 501
    assert "/../../../../etc/passwd" in server.requests
    assert INDEX_PATH in server.requests


def test_a_second_version_sorts_after_the_first(server: SimpleStreamsServer) -> None:
    first = server.add_image(*split_image(), aliases=["tiny"], os="tiny", release="1")
    second = server.add_image(*split_image(), aliases=["tiny"], os="tiny", release="1")
    _, products = catalogue(server)
    (product,) = products["products"].values()
    newest_first = sorted(product["versions"].items(), reverse=True)
    combined = [version["items"]["incus.tar.xz"]["combined_sha256"] for _, version in newest_first]
    assert combined == [second, first]


def test_a_unified_image_is_one_file_named_by_its_sha256(server: SimpleStreamsServer) -> None:
    data = unified_image()
    fingerprint = server.add_image(data, aliases=["uni"], os="uni", release="1")
    assert fingerprint == sha256(data)
    _, products = catalogue(server)
    (product,) = products["products"].values()
    (version,) = product["versions"].values()
    (item,) = version["items"].values()
    assert (item["ftype"], item["sha256"], item["size"]) == (
        "incus_combined.tar.gz",
        fingerprint,
        len(data),
    )


def test_removed_image_leaves_the_catalogue(server: SimpleStreamsServer) -> None:
    kept = server.add_image(*split_image(), aliases=["kept"], os="kept", release="1")
    gone = server.add_image(*split_image(), aliases=["gone"], os="gone", release="1")
    _, products = catalogue(server)
    paths = [
        "/" + item["path"]
        for version in products["products"]["gone:1:default:amd64"]["versions"].values()
        for item in version["items"].values()
    ]
    server.remove_image(gone)
    index, products = catalogue(server)
    assert list(products["products"]) == ["kept:1:default:amd64"]
    assert index["index"]["images"]["products"] == ["kept:1:default:amd64"]
    with https_client(server) as client:
        assert {client.get(path).status_code for path in paths} == {404}
    with pytest.raises(KeyError, match=gone):
        server.remove_image(gone)
    (version,) = products["products"]["kept:1:default:amd64"]["versions"].values()
    assert version["items"]["incus.tar.xz"]["combined_sha256"] == kept


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"version": "v1"}, "must start with a date"),
        ({"version": "20241341"}, "must start with a date"),
        ({"version": "20240101 x"}, "must start with a date"),
        ({"architecture": "x86-64"}, "not one incusd knows"),
        ({"aliases": []}, "non-empty list"),
        ({"aliases": "tiny"}, "non-empty list"),
        ({"aliases": ["a,b"]}, "alias 'a,b'"),
        ({"aliases": [" padded"]}, "alias ' padded'"),
        ({"os": "de:bian"}, "os 'de:bian'"),
        ({"release": ""}, "release ''"),
        ({"image_type": "vm"}, "image_type 'vm'"),
    ],
)
def test_add_image_refuses_what_incusd_would_skip_or_misread(
    options: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"aliases": ["tiny"], "os": "tiny", "release": "1", **options}
    server = SimpleStreamsServer()  # validation needs no running server
    with pytest.raises(ValueError, match=re.escape(message)):
        server.add_image(*split_image(), **arguments)


def test_add_image_refuses_conflicts(server: SimpleStreamsServer) -> None:
    metadata, rootfs = split_image()
    server.add_image(metadata, rootfs, aliases=["tiny"], os="tiny", release="1", version="20240101")
    with pytest.raises(ValueError, match="already published"):
        server.add_image(metadata, rootfs, aliases=["tiny"], os="other", release="1")
    with pytest.raises(ValueError, match="has the aliases 'tiny'"):
        server.add_image(*split_image(), aliases=["other"], os="tiny", release="1")
    with pytest.raises(ValueError, match="already has a version '20240101'"):
        server.add_image(
            *split_image(), aliases=["tiny"], os="tiny", release="1", version="20240101"
        )
    with pytest.raises(ValueError, match="needs rootfs"):
        server.add_image(
            metadata, aliases=["vm"], os="vm", release="1", image_type="virtual-machine"
        )


# --------------------------------------------------------------------------------------------
# incusd copies from it


@pytest.mark.incusd
@pytest.mark.parametrize("alias", ["tiny/1", "tiny/1/amd64"])  # incusd adds ALIAS/ARCH itself
def test_daemon_copies_a_split_image_by_alias(
    raw_api: httpx.Client, server: SimpleStreamsServer, pulled: list[str], alias: str
) -> None:
    metadata, rootfs = split_image()
    os_name = unique("tiny")
    expected = server.add_image(metadata, rootfs, aliases=["tiny/1"], os=os_name, release="1")

    fingerprint = pull(raw_api, server, alias=alias, image_type="container")
    pulled.append(fingerprint)

    assert fingerprint == sha256(metadata, rootfs) == expected
    image = stored_image(raw_api, fingerprint)
    assert image is not None
    assert image["type"] == "container"
    assert image["architecture"] == "x86_64"  # "amd64" in the catalogue
    assert image["size"] == len(metadata) + len(rootfs)
    # The properties come from the catalogue, not from metadata.yaml.
    assert (image["properties"]["os"], image["properties"]["release"]) == (os_name, "1")
    assert image["update_source"]["server"] == server.url
    assert image["update_source"]["alias"] == alias
    assert exported_parts(raw_api, fingerprint) == [metadata, rootfs]
    downloads = [path for path in server.requests if path.startswith("/images/")]
    assert server.requests[:2] == [INDEX_PATH, PRODUCTS_PATH]
    assert len(downloads) == 2 and all(fingerprint in path for path in downloads)


@pytest.mark.incusd
@pytest.mark.parametrize("length", [64, 12])  # the whole fingerprint, and a prefix
def test_daemon_copies_an_image_by_fingerprint(
    raw_api: httpx.Client, server: SimpleStreamsServer, pulled: list[str], length: int
) -> None:
    metadata, rootfs = split_image()
    server.add_image(*split_image(), aliases=["other"], os="other", release="1")
    expected = sha256(metadata, rootfs)
    server.add_image(metadata, rootfs, aliases=["tiny"], os=unique("tiny"), release="1")

    fingerprint = pull(raw_api, server, fingerprint=expected[:length])
    pulled.append(fingerprint)

    assert fingerprint == expected
    assert exported_parts(raw_api, fingerprint) == [metadata, rootfs]


@pytest.mark.incusd
def test_daemon_copies_a_unified_image(
    raw_api: httpx.Client, server: SimpleStreamsServer, pulled: list[str]
) -> None:
    data = unified_image()
    server.add_image(data, aliases=["uni"], os=unique("uni"), release="1")

    fingerprint = pull(raw_api, server, alias="uni")
    pulled.append(fingerprint)

    assert fingerprint == hashlib.sha256(data).hexdigest()
    response = raw_api.get(f"/1.0/images/{fingerprint}/export")
    assert response.status_code == 200 and response.content == data


@pytest.mark.incusd
def test_daemon_copies_virtual_machine_image_metadata(
    raw_api: httpx.Client, server: SimpleStreamsServer, pulled: list[str]
) -> None:
    metadata, _ = split_image()
    disk = b"QFI\xfb" + bytes(4096)  # a qcow2 header; incusd does not open the disk to copy it
    # A container under the same alias: the image type picks which one the alias means.
    server.add_image(*split_image(), aliases=["tiny"], os="tiny", release="1")
    expected = server.add_image(
        metadata, disk, aliases=["tiny"], os="tiny", release="1", image_type="virtual-machine"
    )

    fingerprint = pull(raw_api, server, alias="tiny", image_type="virtual-machine")
    pulled.append(fingerprint)

    assert fingerprint == sha256(metadata, disk) == expected
    image = stored_image(raw_api, fingerprint)
    assert image is not None and image["type"] == "virtual-machine"
    assert exported_parts(raw_api, fingerprint) == [metadata, disk]


@pytest.mark.incusd
def test_daemon_copies_the_newest_version_of_an_alias(
    incusd: ThrowawayIncusd,
    raw_api: httpx.Client,
    server: SimpleStreamsServer,
    pulled: list[str],
) -> None:
    os_name = unique("tiny")
    first = server.add_image(*split_image(), aliases=["tiny"], os=os_name, release="1")
    pulled.append(pull(raw_api, server, alias="tiny"))
    assert pulled == [first]
    newer = split_image()
    second = server.add_image(*newer, aliases=["tiny"], os=os_name, release="1")
    assert incusd.directory is not None
    forget_daemon_catalogue(incusd.directory, server.url)

    pulled.append(pull(raw_api, server, alias="tiny"))

    assert pulled[1] == second == sha256(*newer)
    assert exported_parts(raw_api, second) == list(newer)


@pytest.mark.incusd
def test_daemon_keeps_reading_its_cached_catalogue(
    raw_api: httpx.Client, server: SimpleStreamsServer, pulled: list[str]
) -> None:
    """Why forget_daemon_catalogue exists: without it the second version goes unseen."""
    os_name = unique("tiny")
    first = server.add_image(*split_image(), aliases=["tiny"], os=os_name, release="1")
    pulled.append(pull(raw_api, server, alias="tiny"))
    server.add_image(*split_image(), aliases=["tiny"], os=os_name, release="1")
    catalogue_reads = server.requests.count(PRODUCTS_PATH)

    assert pull(raw_api, server, alias="tiny") == first
    assert server.requests.count(PRODUCTS_PATH) == catalogue_reads == 1


@pytest.mark.incusd
def test_daemon_refreshes_an_image_to_the_newest_version(
    incusd: ThrowawayIncusd,
    raw_api: httpx.Client,
    server: SimpleStreamsServer,
    pulled: list[str],
) -> None:
    os_name = unique("tiny")
    first = server.add_image(*split_image(), aliases=["tiny"], os=os_name, release="1")
    pulled.append(pull(raw_api, server, alias="tiny"))
    second = server.add_image(*split_image(), aliases=["tiny"], os=os_name, release="1")
    pulled.append(second)
    assert incusd.directory is not None
    forget_daemon_catalogue(incusd.directory, server.url)

    finished = wait_raw(raw_api, raw_api.post(f"/1.0/images/{first}/refresh"))

    assert finished["metadata"] == {"refreshed": True}
    assert stored_image(raw_api, second) is not None
    assert stored_image(raw_api, first) is None  # the refresh replaces the image


@pytest.mark.incusd
def test_daemon_reports_download_progress_per_file(
    raw_api: httpx.Client, pulled: list[str]
) -> None:
    metadata, _ = split_image()
    rootfs = bytes(range(256)) * 4096  # 1 MiB, served in about a second
    with SimpleStreamsServer(bytes_per_second=1024 * 1024) as server:
        expected = server.add_image(metadata, rootfs, aliases=["slow"], os="slow", release="1")
        response = raw_api.post("/1.0/images", json=pull_request(server, alias="slow"))
        assert response.status_code == 202, response.text
        operation_url = response.json()["operation"]
        pulled.append(expected)
        seen: list[Any] = []
        deadline = time.monotonic() + 60
        state = operation_state(raw_api, operation_url)
        while state["status_code"] < 200 and time.monotonic() < deadline:
            seen.append(state["metadata"])
            time.sleep(0.02)
            state = operation_state(raw_api, operation_url)

    assert state["status_code"] == 200, state
    assert state["metadata"] == {"fingerprint": expected, "size": str(len(metadata) + len(rootfs))}
    # The result is set while the operation still runs: a poll may catch it before Success.
    running = [state_metadata for state_metadata in seen if state_metadata != state["metadata"]]
    assert all(set(state_metadata or {}) <= {"download_progress"} for state_metadata in running)
    texts = [state_metadata["download_progress"] for state_metadata in running if state_metadata]
    matches = [PROGRESS.fullmatch(text) for text in texts]
    assert texts and all(matches), texts
    rootfs_percentages = [int(m.group(2)) for m in matches if m and m.group(1) == "rootfs"]
    assert len(rootfs_percentages) > 2, texts
    assert rootfs_percentages == sorted(rootfs_percentages)
