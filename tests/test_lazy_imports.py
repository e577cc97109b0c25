"""What a short script loads: heavy modules stay out of ``import incus_images`` and of a list.

scripts/bench.py (``--only startup``) measures what start-up costs; these tests time nothing.
They check, in fresh interpreters, that the deferrals which bought the start-up time stay in
place: a bare import loads no third-party package, and a blocking (or async) client that lists
images loads neither the other flavour, nor the transfer, copy and publish machinery, nor the
CLI configuration's readers (YAML) nor cryptography; a blocking one no more of anyio than
plain httpx loads.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import incus_images
from tests.helpers import image, sync_envelope

FINGERPRINTS = ["a" * 64, "b" * 64]

#: Third-party packages a bare ``import incus_images`` must not load.
THIRD_PARTY = {
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "attr",
    "attrs",
    "cattrs",
    "yaml",
    "cryptography",
}

#: Modules a client that only reads images never needs (either flavour).
NOT_FOR_READING = (
    "yaml",
    "cryptography",
    "incus_images._remotes",
    "incus_images._transfer",
    "incus_images._simplestreams",
    "incus_images._requests",
)
#: The rooms of each flavour that only writing calls use.
WRITING_ROOMS = ("_copying", "_importing", "_publishing", "_bodies")


class _ImagesHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``GET /1.0/images?recursion=1`` as incusd does, with two images."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path != "/1.0/images?recursion=1":
            self.send_error(404)
            return
        envelope = sync_envelope([image(fingerprint) for fingerprint in FINGERPRINTS])
        body = json.dumps(envelope).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet (and a unix socket's peer has no address to log)."""


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def images_server(tmp_path: Path) -> Iterator[str]:
    """A unix socket that answers an image listing; its endpoint."""
    path = tmp_path / "unix.socket"
    server = _UnixHTTPServer(str(path), _ImagesHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"unix://{path}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def loaded_by(program: str) -> tuple[set[str], str]:
    """The modules a fresh interpreter holds after running program, and what it printed."""
    report = "\nimport sys\nprint('\\n' + ' '.join(sorted(sys.modules)))\n"
    result = subprocess.run(
        [sys.executable, "-c", program + report],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    output, _, modules = result.stdout.rstrip("\n").rpartition("\n")
    return set(modules.split()), output.strip()


def _among(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_a_bare_import_loads_no_third_party_package() -> None:
    modules, _ = loaded_by("import incus_images")
    assert {m.split(".")[0] for m in modules} & THIRD_PARTY == set()
    assert _among(modules, ("incus_images",)) == [
        "incus_images",
        "incus_images._errors",
        "incus_images._version",
    ]


def test_a_blocking_list_loads_only_what_reading_needs(images_server: str) -> None:
    program = (
        "from incus_images import Client\n"
        f"with Client({images_server!r}) as client:\n"
        "    images = client.images.list()\n"
        "    print(type(images).__module__, type(images[0]).__module__)\n"
        "    print(' '.join(image.fingerprint for image in images))\n"
    )
    modules, output = loaded_by(program)
    classes_module, fingerprints = output.splitlines()
    assert fingerprints.split() == FINGERPRINTS
    # Classes that came with the client, never named through the package, are presented as
    # public all the same (pickles and tracebacks name incus_images.ImageList).
    assert classes_module.split() == ["incus_images", "incus_images"]
    assert _among(modules, NOT_FOR_READING) == []
    assert _among(modules, ("incus_images._async",)) == []
    # A client of the local socket speaks no TLS and reads no certificate file.
    assert _among(modules, ("incus_images._tls", "incus_images._small_files")) == []
    # httpcore imports anyio's top level whatever the flavour; the SDK adds none of it.
    plain_httpx, _ = loaded_by(
        "import httpx\n"
        f"transport = httpx.HTTPTransport(uds={images_server.removeprefix('unix://')!r})\n"
        "with httpx.Client(transport=transport, base_url='http://incus') as client:\n"
        "    client.get('/1.0/images', params={'recursion': '1'}).json()\n"
    )
    assert set(_among(modules, ("anyio", "sniffio"))) <= plain_httpx
    assert _among(modules, tuple(f"incus_images._sync.{room}" for room in WRITING_ROOMS)) == []


def test_an_async_list_loads_no_blocking_flavour(images_server: str) -> None:
    program = (
        "import asyncio\n"
        "from incus_images import AsyncClient\n"
        "async def main():\n"
        f"    async with AsyncClient({images_server!r}) as client:\n"
        "        print(' '.join(image.fingerprint for image in await client.images.list()))\n"
        "asyncio.run(main())\n"
    )
    modules, output = loaded_by(program)
    assert output.split() == FINGERPRINTS
    assert _among(modules, NOT_FOR_READING) == []
    assert _among(modules, ("incus_images._sync",)) == []
    assert _among(modules, tuple(f"incus_images._async.{room}" for room in WRITING_ROOMS)) == []


def test_the_deferred_modules_load_when_used() -> None:
    """The checks above would pass if loaded_by() saw nothing: here the same probe sees the
    deferred modules arrive once a name that needs them is used."""
    modules, _ = loaded_by("import incus_images\nincus_images.Remote\nincus_images.Client\n")
    assert "incus_images._remotes" in modules
    assert "incus_images._sync.client" in modules
    assert "yaml" not in modules  # imported only when a configuration is read


def test_every_public_name_is_reachable() -> None:
    namespace: dict[str, Any] = {}
    exec("from incus_images import *", namespace)
    assert set(incus_images.__all__) <= set(namespace)
    assert set(incus_images.__all__) <= set(dir(incus_images))
    assert namespace["Client"].__name__ == "Client"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        incus_images.Nothing  # noqa: B018
