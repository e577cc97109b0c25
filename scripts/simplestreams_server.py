"""A local simplestreams image server, so that tests can have a real incusd copy images from it.

    with SimpleStreamsServer() as server:
        fingerprint = server.add_image(metadata, rootfs, aliases=["tiny/1"], os="tiny", release="1")
        # then POST /1.0/images to the daemon with
        #   {"source": {"type": "image", "mode": "pull", "protocol": "simplestreams",
        #               "server": server.url, "certificate": server.certificate_pem,
        #               "alias": "tiny/1"}}
        server.requests                   # the paths the daemon asked for

    with SimpleStreamsServer.from_tree("tree/") as server:   # a tree incus-simplestreams made
        ...
    with SimpleStreamsServer.from_files(synthetic_catalogue(5000)) as server:   # a big one
        ...

The server answers HTTPS on 127.0.0.1 only, on a free port, from a background thread, with a
self-signed certificate made for this run. Below its URL, ``https://127.0.0.1:PORT/<random>``,
it serves ``streams/v1/index.json``, ``streams/v1/images.json`` and the image files published
with ``add_image``, all from memory: no request path ever reaches the file system. A server
made ``from_tree`` reads the tree's index, products files and the files their items name into
memory when it is made, and serves those paths only; ``from_files`` serves a given mapping.
Only the Python standard library and the openssl command are used, like throwaway_incusd.py.

What incusd 6.0.4 reads, and therefore what is served (lxc/incus, shared/simplestreams/ and
client/simplestreams_images.go):

* index.json lists one index of ``datatype: image-downloads`` whose ``path`` is images.json; an
  index with an empty ``products`` list is skipped without being fetched.
* A product names ``os``, ``release``, ``variant`` and ``arch`` (an alias such as ``amd64`` is
  stored as ``x86_64``; a product with an unknown architecture is skipped silently), and
  ``aliases``, comma separated. Each alias also resolves as ``ALIAS/ARCH`` (``tiny/1/amd64``).
* A version name must start with a date, ``YYYYMMDD``, or the version is skipped silently. An
  alias resolves to the version whose name sorts last (the newest), one image type at a time.
* A split image is an ``incus.tar.xz`` item (the metadata) whose ``combined_*_sha256`` field
  for the root item's ``ftype`` is the fingerprint: ``combined_squashfs_sha256`` for
  ``squashfs``, ``combined_rootxz_sha256`` (else ``combined_sha256``) for ``root.tar.xz`` and
  ``combined_disk-kvm-img_sha256`` for ``disk-kvm.img``, which makes a virtual-machine image.
  A unified image is one ``incus_combined.tar.gz`` item; its ``sha256`` is the fingerprint.
  incusd checks every file's ``sha256`` while downloading but never recomputes the combined
  fingerprint: it stores whatever the catalogue claims, so this server computes it honestly.

Two behaviours of incusd that tests must expect:

* It fetches every image file first over plain HTTP on the same port and, when that fails,
  again over HTTPS. This server speaks only TLS, so each file costs a few refused connections
  (Go retries; they are counted in ``handshake_failures``) before the real download.
* It caches index.json and images.json for an hour per server URL, in
  ``$INCUS_DIR/cache/<sha256 of the URL>/``. A catalogue changed after the daemon read it is
  not seen again from the same URL; ``forget_daemon_catalogue`` removes that cache. The random
  part of the URL keeps a later server that happens to get the same port from being served an
  earlier server's catalogue out of that cache.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

ImageType = Literal["container", "virtual-machine"]

#: The architecture names incusd accepts in a product's ``arch`` and the name it stores
#: (lxc/incus shared/osarch/architectures.go). Any other name makes incusd skip the product.
ARCHITECTURES = {
    **dict.fromkeys(["i686", "i386", "i586", "386", "x86", "generic_32"], "i686"),
    **dict.fromkeys(["x86_64", "amd64", "generic_64"], "x86_64"),
    **dict.fromkeys(["armv6l", "armel", "arm"], "armv6l"),
    **dict.fromkeys(
        ["armv7l", "armhf", "armhfp", "armv7a_hardfp", "armv7", "armv7a_vfpv3_hardfp"], "armv7l"
    ),
    "armv8l": "armv8l",
    **dict.fromkeys(["aarch64", "arm64", "arm64_generic"], "aarch64"),
    **dict.fromkeys(["ppc", "powerpc"], "ppc"),
    **dict.fromkeys(["ppc64", "powerpc64"], "ppc64"),
    **dict.fromkeys(["ppc64le", "ppc64el"], "ppc64le"),
    "s390x": "s390x",
    **dict.fromkeys(["mips", "mipsel", "mipsle"], "mips"),
    **dict.fromkeys(["mips64", "mips64el", "mips64le"], "mips64"),
    "riscv32": "riscv32",
    "riscv64": "riscv64",
    **dict.fromkeys(["loongarch64", "loong64"], "loongarch64"),
}

INDEX_PATH = "/streams/v1/index.json"
PRODUCTS_PATH = "/streams/v1/images.json"

#: The first bytes of a squashfs file: such a rootfs is published as ``squashfs``, the format
#: real image servers prefer, and any other container rootfs as ``root.tar.xz`` (incusd reads
#: the ftype only to pick the fingerprint field; it unpacks by content, so a tar.gz is fine).
_SQUASHFS_MAGIC = b"hsqs"

#: Served in pieces of this size, so that a rate limit can pace them and a stop can end them.
_CHUNK = 64 * 1024
#: A client that sends nothing for this long is dropped (it keeps a thread otherwise).
_CONNECTION_TIMEOUT_SECONDS = 30.0
#: Version names incusd accepts: a date first (it is the image's creation date), then any
#: of the characters real servers use (``20240101_05:24``).
_VERSION = re.compile(r"\d{8}[0-9A-Za-z_.:-]*")


class SimpleStreamsError(RuntimeError):
    """The server cannot be started here; the message says why."""


def forget_daemon_catalogue(incus_dir: str | Path, server_url: str) -> None:
    """Make the daemon in ``incus_dir`` read the catalogue of ``server_url`` again.

    incusd keeps index.json and images.json for an hour per server URL (lxc/incus
    client/connection.go, ConnectSimpleStreams: ``CacheExpiry: time.Hour``), also for image
    refreshes, so a version added afterwards stays invisible to it. Removing the two cached
    files is what its own cache does when a download by hash fails.
    """
    # The daemon keys its cache by the URL it was given, less one trailing slash.
    key = hashlib.sha256(server_url.removesuffix("/").encode()).hexdigest()
    cache = Path(incus_dir) / "cache" / key
    for name in ("index.json", "images.json"):
        (cache / name).unlink(missing_ok=True)


def cli_environment(
    directory: str | Path, url: str, certificate_pem: str, *, name: str, timeout: float = 120.0
) -> dict[str, str]:
    """The environment for running the incus CLI cold against the simplestreams server at
    ``url``, known to it as the remote ``name``: INCUS_CONF, INCUS_CACHE and HOME in
    ``directory`` (an empty scratch directory), so that no remote, certificate or cached
    catalogue of the user's is read or written.

    The CLI caches a catalogue for 5 minutes in ``$INCUS_CACHE``, else ``$HOME/.cache/incus``,
    else the user's home from the password database, which is why HOME alone is not enough
    when it does not exist. ``incus remote add NAME URL --protocol simplestreams --public`` is
    run here; incus 6.0.4 does not store a simplestreams server's self-signed certificate on
    ``remote add``, so it is written to ``servercerts/NAME.crt``. No incusd is involved: the
    CLI reads a simplestreams remote itself. A failed ``remote add`` raises RuntimeError.
    """
    scratch = Path(directory)
    conf, cache, home = scratch / "conf", scratch / "cache", scratch / "home"
    for folder in (conf, cache, home):
        folder.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "INCUS_CONF": str(conf),
        "INCUS_CACHE": str(cache),
        "HOME": str(home),
        "XDG_CACHE_HOME": str(cache),
        "LANG": "C.UTF-8",
    }
    args = ["incus", "remote", "add", name, url, "--protocol", "simplestreams", "--public"]
    result = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    (conf / "servercerts").mkdir(exist_ok=True)
    (conf / "servercerts" / f"{name}.crt").write_text(certificate_pem)
    return env


def make_server_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, made with openssl.

    The address goes in subjectAltName because Go checks IP addresses only there. No DNS name
    is added: incusd would then verify the server under that name instead of 127.0.0.1.
    """
    if shutil.which("openssl") is None:
        raise SimpleStreamsError("openssl is needed to make the server certificate")
    cert = directory / "server.crt"
    key = directory / "server.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-sha256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _check_name(what: str, value: str, *, forbidden: str) -> None:
    if (
        not value
        or not value.isprintable()
        or value.strip() != value
        or any(char in value for char in forbidden)
    ):
        raise ValueError(
            f"{what} {value!r} must be printable text, not empty, without surrounding spaces "
            f"and without any of {forbidden!r}"
        )


def _check_relative(name: str) -> None:
    """Refuse a path that is not plainly relative: absolute, empty or ``.``/``..`` parts,
    backslashes or characters that are not printable."""
    parts = name.split("/")
    if not name.isprintable() or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{name!r} is not a relative path of plain names")


def read_tree(tree: str | Path) -> dict[str, bytes]:
    """The files of a simplestreams tree that a client may ask for, by relative path: the
    index, the products files it names and every item's file (see from_tree)."""
    root = Path(tree).resolve()
    files: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        _check_relative(name)
        path = (root / name).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ValueError(f"{name!r} is not a regular file inside {root}")
        if name not in files:
            files[name] = path.read_bytes()
        return files[name]

    index_name = INDEX_PATH.lstrip("/")
    if not (root / index_name).is_file():
        raise FileNotFoundError(f"{root} has no {index_name}")
    index = json.loads(read(index_name))
    for entry in index["index"].values():
        products = json.loads(read(entry["path"]))
        for product in products["products"].values():
            for version in product["versions"].values():
                for item in version["items"].values():
                    read(item["path"])
    return files


def _product(os: str, release: str, variant: str, arch: str, aliases: str) -> dict[str, Any]:
    """A product without versions, with the fields incusd reads."""
    return {
        "aliases": aliases,
        "arch": arch,
        "os": os,
        "release": release,
        "release_title": release,
        "variant": variant,
        "versions": {},
    }


def _synthetic_item(folder: str, ftype: str, size: int) -> dict[str, Any]:
    """An item of a synthetic catalogue: a made-up but well-formed file."""
    path = f"images/{folder}/{ftype}"
    return {
        "ftype": ftype,
        "path": path,
        "sha256": hashlib.sha256(path.encode()).hexdigest(),
        "size": size,
    }


def _catalogue_files(products: Mapping[str, Any]) -> dict[str, bytes]:
    """index.json and images.json (by relative path) for these products."""
    catalogue = {
        "content_id": "images",
        "datatype": "image-downloads",
        "format": "products:1.0",
        "products": products,
    }
    index = {
        "format": "index:1.0",
        "index": {
            "images": {
                "datatype": "image-downloads",
                "path": PRODUCTS_PATH.lstrip("/"),
                "format": "products:1.0",
                "products": sorted(products),
            }
        },
    }
    return {
        INDEX_PATH.lstrip("/"): json.dumps(index, indent=1).encode(),
        PRODUCTS_PATH.lstrip("/"): json.dumps(catalogue, indent=1).encode(),
    }


class _HandshakeRefused(Exception):
    """The TLS handshake of a connection failed (incusd's plain-HTTP try, for one)."""


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers GET and HEAD from the server's catalogue; anything else is refused by the base
    class (501)."""

    server: _HTTPServer
    timeout = _CONNECTION_TIMEOUT_SECONDS
    server_version = "simplestreams-test"
    sys_version = ""

    def setup(self) -> None:
        # The handshake runs here, in this connection's thread, so that a client that stalls
        # or speaks plain HTTP holds up only itself, not the accepting thread.
        self.request.settimeout(self.timeout)
        try:
            self.request.do_handshake()
        except OSError as exc:  # ssl.SSLError included
            raise _HandshakeRefused(str(exc)) from exc
        super().setup()

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        owner = self.server.owner
        path = owner._record(self.path.split("?", 1)[0])
        body = None if path is None else owner._lookup(path)
        if path is None or body is None:
            self.send_error(404)
            return
        self.send_response(200)
        kind = "application/json" if path.endswith(".json") else "application/octet-stream"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            owner._send(self.wfile, body)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the tests look at ``requests``, and pytest would show stderr noise."""


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: SimpleStreamsServer, context: ssl.SSLContext) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)
        # Handshakes are left to each connection's thread (see _Handler.setup).
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Called while the connection's exception is being handled: count it, print nothing.
        self.owner._connection_failed(handshake=isinstance(sys.exc_info()[1], _HandshakeRefused))


class SimpleStreamsServer:
    """A simplestreams image server on https://127.0.0.1:<free port>, started and stopped by
    this object (a context manager), serving only the images published with ``add_image``,
    or, made with ``from_tree`` or ``from_files``, exactly the files given (then
    ``add_image`` and ``remove_image`` are refused: the catalogue is the tree's).

    ``bytes_per_second`` paces every download, for tests that watch progress or cancel.
    """

    def __init__(self, *, bytes_per_second: int | None = None) -> None:
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be positive, not {bytes_per_second}")
        self.bytes_per_second = bytes_per_second
        #: The PEM text of the server's certificate: pass it to incusd as ``certificate``.
        self.certificate_pem = ""
        #: The path of every GET and HEAD request, in order, relative to ``url`` (like
        #: ``/streams/v1/index.json``; a path outside ``url`` as it was sent), without query
        #: strings, including those answered 404.
        self.requests: list[str] = []
        #: Connections refused during the TLS handshake (incusd's plain-HTTP tries among them).
        self.handshake_failures = 0
        #: Connections that ended in an error after the handshake (a client gone mid-file).
        self.connection_errors = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._products: dict[str, dict[str, Any]] = {}
        self._files: dict[str, bytes] = {}
        self._fingerprints: dict[str, tuple[str, str]] = {}
        self._serial = 0
        self._prefix = ""
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        #: Set by from_files: the files served are fixed, not rendered from _products.
        self._fixed = False
        self._publish_locked()  # an empty catalogue until images are added

    @classmethod
    def from_files(
        cls, files: Mapping[str, bytes], *, bytes_per_second: int | None = None
    ) -> SimpleStreamsServer:
        """A server (not started) that serves exactly ``files``: each key a path relative to
        ``url`` (``streams/v1/index.json``, ``images/...``), each value the body. Nothing
        is checked against simplestreams: a test may serve any catalogue, a broken one too.
        """
        server = cls(bytes_per_second=bytes_per_second)
        served: dict[str, bytes] = {}
        for name, body in files.items():
            _check_relative(name)
            served["/" + name] = bytes(body)
        server._files = served
        server._fixed = True
        return server

    @classmethod
    def from_tree(
        cls, tree: str | Path, *, bytes_per_second: int | None = None
    ) -> SimpleStreamsServer:
        """A server (not started) for a simplestreams tree on disk, as ``incus-simplestreams``
        makes: its ``streams/v1/index.json``, the products files that index names and every
        file the products' items name, read into memory now (later changes to the tree are
        not seen: make a new server). Only those paths are served; each must be a relative
        path naming a regular file inside the tree. A tree that breaks these rules raises
        ValueError, and one without an index FileNotFoundError.
        """
        return cls.from_files(read_tree(tree), bytes_per_second=bytes_per_second)

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT/<random>``, the ``server`` to give incusd."""
        assert self._httpd is not None, "the server is not started"
        return f"https://127.0.0.1:{self._httpd.server_address[1]}{self._prefix}"

    def start(self) -> SimpleStreamsServer:
        assert self._httpd is None, "the server is already started"
        # The key lives only as long as it takes to load it.
        with tempfile.TemporaryDirectory(prefix="simplestreams-") as directory:
            cert, key = make_server_certificate(Path(directory))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(cert, key)
            self.certificate_pem = cert.read_text()
        self._stopping.clear()
        self._prefix = "/" + secrets.token_hex(8)
        self._httpd = _HTTPServer(self, context)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="simplestreams-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, ending downloads in progress, and close the port."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> SimpleStreamsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add_image(
        self,
        metadata: bytes,
        rootfs: bytes | None = None,
        *,
        aliases: Sequence[str],
        os: str,
        release: str,
        variant: str = "default",
        architecture: str = "amd64",
        image_type: ImageType = "container",
        version: str | None = None,
    ) -> str:
        """Publish an image as a new version of the product (os, release, variant,
        architecture) and return the fingerprint incusd will store it under.

        ``rootfs=None`` publishes ``metadata`` as a unified image (fingerprint: its SHA-256);
        otherwise a split image (fingerprint: SHA-256 of metadata then rootfs). A
        ``virtual-machine`` image needs ``rootfs`` (the disk). ``aliases`` belong to the
        product: a second version must name the same ones, and the aliases then resolve to
        the version whose name sorts last. ``version`` defaults to the UTC time and a serial
        number, so that each image added sorts after the ones before; an explicit one must
        start with a date, ``YYYYMMDD`` (incusd's creation date).
        """
        self._check_not_fixed()
        # ":" separates the parts of a product's key, "," the aliases of a product.
        for what, value in (("os", os), ("release", release), ("variant", variant)):
            _check_name(what, value, forbidden=":,")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {architecture!r} is not one incusd knows")
        if image_type not in ("container", "virtual-machine"):
            raise ValueError(f"image_type {image_type!r} is not container or virtual-machine")
        if isinstance(aliases, str) or not aliases:
            raise ValueError("aliases must be a non-empty list of names")
        for alias in aliases:
            _check_name("alias", alias, forbidden=",")
        if not metadata:
            raise ValueError("metadata is empty")
        if rootfs is not None and not rootfs:
            raise ValueError("rootfs is empty")
        if rootfs is None and image_type != "container":
            raise ValueError("a virtual-machine image needs rootfs (the disk image)")
        if version is not None:
            self._check_version(version)

        digest = hashlib.sha256(metadata)
        if rootfs is not None:
            digest.update(rootfs)
        fingerprint = digest.hexdigest()
        items, files = self._items(fingerprint, metadata, rootfs, image_type)

        key = f"{os}:{release}:{variant}:{architecture}"
        alias_text = ",".join(aliases)
        with self._lock:
            if fingerprint in self._fingerprints:
                raise ValueError(f"image {fingerprint} is already published")
            product = self._products.get(key)
            if product is not None and product["aliases"] != alias_text:
                raise ValueError(
                    f"product {key} has the aliases {product['aliases']!r}, not {alias_text!r}"
                )
            if version is None:
                self._serial += 1
                version = f"{datetime.now(UTC):%Y%m%d_%H%M%S}_{self._serial:06d}"
            if product is not None and version in product["versions"]:
                raise ValueError(f"product {key} already has a version {version!r}")
            if product is None:
                product = _product(os, release, variant, architecture, alias_text)
                self._products[key] = product
            product["versions"][version] = {"items": items}
            self._files.update(files)
            self._fingerprints[fingerprint] = (key, version)
            self._publish_locked()
        return fingerprint

    def remove_image(self, fingerprint: str) -> None:
        """Withdraw a published image (its files then answer 404)."""
        self._check_not_fixed()
        with self._lock:
            if fingerprint not in self._fingerprints:
                raise KeyError(f"image {fingerprint} is not published")
            key, version = self._fingerprints.pop(fingerprint)
            product = self._products[key]
            for item in product["versions"].pop(version)["items"].values():
                self._files.pop("/" + item["path"], None)
            if not product["versions"]:
                del self._products[key]
            self._publish_locked()

    def _check_not_fixed(self) -> None:
        if self._fixed:
            raise ValueError("this server serves fixed files (from_files, from_tree)")

    @staticmethod
    def _check_version(version: str) -> None:
        # incusd reads the first eight characters as the creation date and skips, silently,
        # a version whose name does not start with one.
        valid = _VERSION.fullmatch(version) is not None
        if valid:
            try:
                datetime.strptime(version[:8], "%Y%m%d")
            except ValueError:
                valid = False
        if not valid:
            raise ValueError(
                f"version {version!r} must start with a date (YYYYMMDD), then only letters, "
                "digits and _.:-"
            )

    @staticmethod
    def _items(
        fingerprint: str, metadata: bytes, rootfs: bytes | None, image_type: ImageType
    ) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
        """The items of one version and the files they name (by URL path)."""
        folder = f"images/{fingerprint}"

        def item(ftype: str, name: str, data: bytes) -> dict[str, Any]:
            return {
                "ftype": ftype,
                "path": f"{folder}/{name}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
            }

        if rootfs is None:
            unified = item("incus_combined.tar.gz", "incus_combined.tar.gz", metadata)
            return {unified["ftype"]: unified}, {"/" + unified["path"]: metadata}

        meta = item("incus.tar.xz", "incus.tar.xz", metadata)
        if image_type == "virtual-machine":
            root = item("disk-kvm.img", "disk.qcow2", rootfs)
            meta["combined_disk-kvm-img_sha256"] = fingerprint
        elif rootfs.startswith(_SQUASHFS_MAGIC):
            root = item("squashfs", "rootfs.squashfs", rootfs)
            meta["combined_squashfs_sha256"] = fingerprint
        else:
            root = item("root.tar.xz", "rootfs.tar.xz", rootfs)
            # Real servers set both; incusd 6.0.4 prefers the first.
            meta["combined_rootxz_sha256"] = fingerprint
            meta["combined_sha256"] = fingerprint
        files = {"/" + meta["path"]: metadata, "/" + root["path"]: rootfs}
        return {meta["ftype"]: meta, root["ftype"]: root}, files

    def _publish_locked(self) -> None:
        """Render index.json and images.json from the products (with the lock held, or
        before any other thread can see this object)."""
        assert not self._fixed, "a server of fixed files renders no catalogue"
        self._files.update(
            {"/" + name: body for name, body in _catalogue_files(self._products).items()}
        )

    def _record(self, path: str) -> str | None:
        """Note a request; return its path relative to ``url``, or None if outside it."""
        relative = path[len(self._prefix) :] if path.startswith(self._prefix + "/") else None
        with self._lock:
            self.requests.append(path if relative is None else relative)
        return relative

    def _lookup(self, path: str) -> bytes | None:
        with self._lock:
            return self._files.get(path)

    def _send(self, out: io.BufferedIOBase, body: bytes) -> None:
        """Write body, paced to bytes_per_second; stop early if the server is stopping."""
        started = time.monotonic()
        for offset in range(0, len(body), _CHUNK):
            if self._stopping.is_set():
                raise ConnectionAbortedError("the server is stopping")
            out.write(body[offset : offset + _CHUNK])
            if self.bytes_per_second is not None:
                due = started + (offset + _CHUNK) / self.bytes_per_second
                self._stopping.wait(max(0.0, due - time.monotonic()))

    def _connection_failed(self, *, handshake: bool) -> None:
        with self._lock:
            if handshake:
                self.handshake_failures += 1
            else:
                self.connection_errors += 1


def synthetic_catalogue(count: int) -> dict[str, bytes]:
    """A catalogue of ``count`` images shaped like a public image server's, for
    ``SimpleStreamsServer.from_files``: ``streams/v1/index.json`` and
    ``streams/v1/images.json`` only, no image files (their paths answer 404), so it is made in
    well under a second even for thousands of images. Listing it needs no image file.

    Products ``distroD:rR:VARIANT:ARCH`` (amd64 and arm64 pairs sharing their aliases
    ``distroD/rR/VARIANT`` and ``distroD/rR``); each has two versions, and each version a
    metadata item, a squashfs rootfs and a qcow2 disk: two images (a container and a
    virtual-machine) per version, so four per product (plus items a lister ignores, as real
    servers have: ``lxd.tar.xz``, and a ``squashfs.vcdiff`` delta in the second version);
    the last product has fewer when ``count`` is not a multiple of four. Fingerprints and
    file hashes are made up but well-formed, distinct, and deterministic.
    """
    if count < 0:
        raise ValueError(f"count must not be negative, not {count}")

    products: dict[str, dict[str, Any]] = {}
    for index in range(count):
        number, version_number, is_vm = index // 4, index // 2 % 2, index % 2
        os, release = f"distro{number // 40}", f"r{number // 4 % 10}"
        variant = ("default", "cloud")[number // 2 % 2]
        architecture = ("amd64", "arm64")[number % 2]
        key = f"{os}:{release}:{variant}:{architecture}"
        if key not in products:
            aliases = f"{os}/{release}/{variant},{os}/{release}"
            products[key] = _product(os, release, variant, architecture, aliases)
        base = "20240101_07:42"
        version = f"202401{version_number + 1:02d}_07:42"
        items = products[key]["versions"].setdefault(version, {"items": {}})["items"]
        folder = f"{key.replace(':', '/')}/{version}"
        if not items:
            items["incus.tar.xz"] = _synthetic_item(folder, "incus.tar.xz", 1_000 + index)
            # Items incusd ignores when listing, there to give the file a real one's bulk:
            # the metadata for older clients, and a delta from the version before.
            items["lxd.tar.xz"] = _synthetic_item(folder, "lxd.tar.xz", 1_000 + index)
            if version_number:
                delta = _synthetic_item(folder, "squashfs.vcdiff", 5_000_000)
                items["squashfs.vcdiff"] = {**delta, "delta_base": base}
        ftype = "disk-kvm.img" if is_vm else "squashfs"
        items[ftype] = _synthetic_item(folder, ftype, (300 if is_vm else 100) * 10**6 + index)
        combined = "combined_disk-kvm-img_sha256" if is_vm else "combined_squashfs_sha256"
        items["incus.tar.xz"][combined] = hashlib.sha256(f"{folder}/{ftype}".encode()).hexdigest()
    return _catalogue_files(products)
