"""A TCP proxy on loopback that paces what the server sends, for tests that need a slow
transfer between real daemons (a pull that lasts seconds, to watch its progress).

    with PacedProxy(("127.0.0.1", 8443), bytes_per_second=400 * 1024) as proxy:
        proxy.url                   # https://127.0.0.1:<free port>: TLS passes through as is

Bytes from the client go through at once; bytes from the server at most ``bytes_per_second``.
Threads of the test harness carry the bytes (the SDK under test runs none); stopping the proxy
closes every connection. Only the standard library is used.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

#: Bytes moved per step: the pace is kept to within one step.
_STEP = 16 * 1024
#: Time a paced direction may be behind its pace (idle) and catch up at full speed.
_CREDIT_SECONDS = 0.1


class PacedProxy:
    """Listens on 127.0.0.1:<free port> and forwards each connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int], *, bytes_per_second: int) -> None:
        if bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be positive, not {bytes_per_second}")
        self.upstream = upstream
        self.bytes_per_second = bytes_per_second
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> PacedProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        # Closing alone does not wake a thread blocked in accept() on Linux; a shutdown does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            self._spawn(self._pump, client, server, None)
            self._spawn(self._pump, server, client, self.bytes_per_second)

    def _pump(self, source: socket.socket, sink: socket.socket, pace: int | None) -> None:
        started = time.monotonic()
        moved = 0
        try:
            while not self._stopping.is_set():
                data = source.recv(_STEP)
                if not data:
                    break
                sink.sendall(data)
                if pace is not None:
                    moved += len(data)
                    ahead = moved / pace - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                    elif ahead < -_CREDIT_SECONDS:
                        # An idle connection saves no credit for a burst later.
                        started += -ahead - _CREDIT_SECONDS
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
