"""A scripted hostile HTTP server on a unix socket: it answers as no real incusd does (drips
bytes, sends without end, ignores timeouts), so that tests can check the SDK's bounds.

    with HostileServer(tmp_path, answer) as server:
        AsyncClient(server.endpoint, timeout=2)
        server.requests      # "GET /1.0/images?recursion=1", ...
        server.sent          # bytes written to the client, in all
        server.received      # bytes read from the client, in all

``answer(method, target)`` returns an iterable of bytes (the raw HTTP answer, head included)
or of floats (seconds to pause). Writing stops quietly when the client goes away.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

Answer = Callable[[str, str], Iterable[bytes | float]]


def head(status: int = 200, **headers: str) -> bytes:
    """An HTTP/1.1 status line and headers, ending the head."""
    lines = [f"HTTP/1.1 {status} X"] + [
        f"{name.replace('_', '-')}: {value}" for name, value in headers.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def sync_answer(metadata: Any) -> bytes:
    body = json.dumps({"type": "sync", "status": "Success", "metadata": metadata}).encode()
    return head(Content_Type="application/json", Content_Length=str(len(body))) + body


def dripping(data: bytes, every: float = 1.0) -> Iterator[bytes | float]:
    """data one byte at a time, a pause before each."""
    for index in range(len(data)):
        yield every
        yield data[index : index + 1]


class HostileServer:
    def __init__(self, directory: Path, answer: Answer) -> None:
        self.path = str(directory / "hostile.sock")
        self._answer = answer
        self.requests: list[str] = []
        self.sent = 0
        self.received = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return "unix://" + self.path

    def __enter__(self) -> HostileServer:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        listener.listen(16)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._listener is not None:
            self._listener.close()

    def _serve(self) -> None:
        assert self._listener is not None
        workers = []
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            worker = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            worker.start()
            workers.append(worker)
        for worker in workers:
            worker.join(10)

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            conn.settimeout(30)
            buffer = b""
            while not self._stopping.is_set():
                while b"\r\n\r\n" not in buffer:
                    data = self._receive(conn)
                    if not data:
                        return
                    buffer += data
                request, _, buffer = buffer.partition(b"\r\n\r\n")
                line = request.split(b"\r\n", 1)[0].decode("latin-1")
                method, target = line.split(" ")[:2]
                length = _content_length(request)
                while len(buffer) < length:
                    data = self._receive(conn)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                with self._lock:
                    self.requests.append(f"{method} {target}")
                if not self._write(conn, self._answer(method, target)):
                    return

    def _receive(self, conn: socket.socket) -> bytes:
        """The next bytes from the client; none once it closed or reset the connection."""
        try:
            data = conn.recv(65536)
        except OSError:
            return b""
        with self._lock:
            self.received += len(data)
        return data

    def _write(self, conn: socket.socket, parts: Iterable[bytes | float]) -> bool:
        for part in parts:
            if self._stopping.is_set():
                return False
            if isinstance(part, float | int):
                time.sleep(part)
                continue
            try:
                conn.sendall(part)
            except OSError:
                return False
            with self._lock:
                self.sent += len(part)
        return True


def _content_length(request: bytes) -> int:
    for line in request.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0
