"""A hostile copy source on loopback HTTPS: it tells the SDK one thing and the target daemon
another, so that tests can check what a pull copy does with a source that lies.

    with HostileCopySource(tmp_path, {fp1: image_for_the_sdk}, {fp1: image_for_daemon}) as source:
        AsyncClient(source.url, verify=False)    # the SDK then pins the certificate it saw
        source.requests                          # ("sdk" or "daemon", "GET /1.0/images/...")

Requests carrying the SDK's User-Agent (``incus_images/...``) get ``to_sdk``; every other
client (incusd's Go client) gets ``to_daemon``. It serves ``GET /1.0`` and
``GET /1.0/images/<fingerprint>`` from those tables, and 404 for anything else (alias
lookups included). Only the standard library and the openssl command are used.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from simplestreams_server import make_server_certificate

IMAGES = "/1.0/images/"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        source = self.server.owner
        who = "sdk" if self.headers.get("User-Agent", "").startswith("incus_images/") else "daemon"
        path = self.path.split("?", 1)[0]
        with source.lock:
            source.requests.append((who, f"GET {path}"))
        table = source.to_sdk if who == "sdk" else source.to_daemon
        metadata: Any = None
        if path == "/1.0":
            metadata = {"api_version": "1.0", "auth": "untrusted", "public": True}
        elif path.startswith(IMAGES):
            metadata = table.get(path[len(IMAGES) :])
        if metadata is None:
            self._send(404, {"type": "error", "error": "not found", "error_code": 404})
        else:
            body = {"type": "sync", "status": "Success", "status_code": 200}
            self._send(200, {**body, "metadata": metadata})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: HostileCopySource, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner
        self.socket = context.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that goes away mid-handshake is no test failure


class HostileCopySource:
    def __init__(
        self,
        directory: Path,
        to_sdk: dict[str, dict[str, Any]],
        to_daemon: dict[str, dict[str, Any]],
    ) -> None:
        self.to_sdk = to_sdk
        self.to_daemon = to_daemon
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        cert, key = make_server_certificate(directory)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HostileCopySource:
        self._server = _Server(self, self._context)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
