"""A programmable websocket server on a unix socket (or over TLS on 127.0.0.1, given
``tls=`` a certificate), for the event stream's tests: it answers
the upgrade as told (right, with a wrong Sec-WebSocket-Accept, another status) and then sends
what its script says, frames no real incusd sends included, while it records what the client
sent back.

    def script(peer: Peer) -> None:          # runs in the server's thread, one per connection
        peer.upgrade()
        peer.ping(b"keepalive")
        peer.text(EVENT)
        peer.expect(Pong)                    # the client's answer, or None after a while

    with WebSocketServer(tmp_path, script) as server:
        AsyncClient(server.endpoint, timeout=2)
        server.requests                      # ["GET /1.0/events?type=lifecycle", ...]
        server.received                      # the client's frames (wsproto events), in order
        server.sent                          # bytes written to the client, in all
        server.closes()                      # the codes of the client's close frames
        server.wait_scripts()                # until the scripts ended (their errors raised)

It is the hostile HTTP server (``tests/hostile_server.py``) with another conversation per
connection. A script's exception is raised again by ``server.wait_scripts()``, which waits
for the scripts to end.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from wsproto import connection as ws
from wsproto.events import CloseConnection, Event

from tests.helpers import error_response
from tests.hostile_server import HostileServer, head
from tests.pki import Issued

#: Opcodes (RFC 6455, 5.2).
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

EVENTS = Path(__file__).parent / "data" / "events"


def captured(name: str) -> bytes:
    """A frame incusd sent, as captured (tests/data/events/<name>.json)."""
    return (EVENTS / f"{name}.json").read_bytes().strip()


def frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, length: int | None = None
) -> bytes:
    """A server's frame (unmasked) of any opcode and payload, what wsproto would refuse to build
    included; ``length`` announces another payload length than the bytes given (a frame whose
    payload follows in pieces)."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        start = bytes([first, size])
    elif size < 1 << 16:
        start = bytes([first, 126]) + size.to_bytes(2, "big")
    else:
        start = bytes([first, 127]) + size.to_bytes(8, "big")
    return start + payload


def accept_for(key: str) -> str:
    return base64.b64encode(
        hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    ).decode()


def incusd_error(status: int, message: str) -> bytes:
    """An error answer as incusd writes one, head included."""
    body = error_response(status, message).content
    return head(status, Content_Type="application/json", Content_Length=str(len(body))) + body


class Peer:
    """One client connection, as a script drives it (in the server's thread). Every send
    returns False once the client is gone (and the script should end)."""

    def __init__(self, server: WebSocketServer, conn: socket.socket, headers: dict[str, str]):
        self._server = server
        self._conn = conn
        #: The upgrade request's headers, names in lower case.
        self.headers = headers
        # The client's frames, parsed as a server does.
        self._ws = ws.Connection(ws.ConnectionType.SERVER)

    @property
    def stopping(self) -> bool:
        return self._server._stopping.is_set()

    # The answer to the upgrade.

    def upgrade(self, *, accept: str | None = None, then: bytes = b"", **headers: str) -> bool:
        """Switch to websocket: 101 with the right Sec-WebSocket-Accept unless ``accept`` is
        given; ``then``: bytes sent in the same write, right after the head."""
        fields = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec_WebSocket_Accept": accept or accept_for(self.headers["sec-websocket-key"]),
        }
        fields.update(headers)
        return self.send_raw(head(101, **fields) + then)

    # Frames.

    def send_raw(self, data: bytes) -> bool:
        if self.stopping:
            return False
        try:
            self._conn.sendall(data)
        except OSError:
            return False
        with self._server._lock:
            self._server.sent += len(data)
        return True

    def text(self, data: bytes | str, *, fin: bool = True) -> bool:
        return self.send_raw(frame(TEXT, data.encode() if isinstance(data, str) else data, fin=fin))

    def ping(self, payload: bytes = b"keepalive") -> bool:
        return self.send_raw(frame(PING, payload))

    def close(self, code: int = 1000, reason: str = "") -> bool:
        return self.send_raw(frame(CLOSE, code.to_bytes(2, "big") + reason.encode()))

    def stream_frame(self, size: int, *, opcode: int = TEXT, piece: bytes = b"x" * 65536) -> int:
        """One frame of ``size`` bytes, written as it goes (never built whole): ``piece``
        again and again until the size is reached or the client stops taking it. Returns
        how many payload bytes were sent."""
        if not self.send_raw(frame(opcode, length=size)):
            return 0
        done = 0
        view = memoryview(piece)
        while done < size:
            chunk = view[: min(len(piece), size - done)]
            if not self.send_raw(chunk):  # type: ignore[arg-type]
                break
            done += len(chunk)
        return done

    def flood(self, data: bytes, *, seconds: float = 10.0) -> int:
        """``data`` again and again until the client is gone (or ``seconds`` passed); returns
        how many times it was sent whole."""
        count = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.send_raw(data):
            count += 1
        return count

    def drop(self) -> None:
        """End the connection without a close frame, as incusd drops a silent listener."""
        with contextlib.suppress(OSError):
            self._conn.shutdown(socket.SHUT_RDWR)

    # What the client sends.

    def expect(self, kind: type[Event], seconds: float = 2.0) -> Event | None:
        """The client's next frame of this kind (the others are recorded on the way), or
        None when none came within ``seconds`` or the client went away."""
        end = time.monotonic() + seconds
        while True:
            for event in self._ws.events():
                with self._server._lock:
                    self._server.received.append(event)
                if isinstance(event, kind):
                    return event
            left = end - time.monotonic()
            if left <= 0 or self.stopping:
                return None
            data = self._read(min(left, 0.1))
            if data == b"":
                return None
            if data is not None:
                self._ws.receive_data(data)

    def wait_gone(self, seconds: float = 10.0) -> bool:
        """Read (and record) what the client sends until it closes the connection: whether
        it did within ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stopping:
            data = self._read(0.1)
            if data:
                self._ws.receive_data(data)
            # Frames expect() left unread are recorded too.
            for event in self._ws.events():
                with self._server._lock:
                    self._server.received.append(event)
            if data == b"":
                with self._server._lock:
                    self._server.gone += 1
                return True
        return False

    def _read(self, seconds: float) -> bytes | None:
        """Bytes from the client; b"" once it closed the connection; None: nothing yet."""
        self._conn.settimeout(seconds)
        try:
            data = self._conn.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return b""
        with self._server._lock:
            self._server.received_bytes += len(data)
        return data


Script = Callable[[Peer], Any]


class WebSocketServer(HostileServer):
    """On a unix socket; with ``tls`` (a certificate such as ``tests.pki.self_signed``
    makes), on 127.0.0.1 over TLS instead, answering the members question an HTTPS client
    asks first as a server that is no cluster's does."""

    def __init__(self, directory: Path, script: Script, *, tls: Issued | None = None) -> None:
        super().__init__(directory, lambda method, target: ())
        self._script = script
        self._tls: ssl.SSLContext | None = None
        #: The certificate a client verifies the server against (None: a unix socket).
        self.certificate: str | None = None
        if tls is not None:
            certificate, key = tls.write(directory, "ws-server")
            self.certificate = str(certificate)
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(certificate, key)
        #: The client's frames (pings' pongs, closes, ...), as wsproto events.
        self.received: list[Event] = []
        self.received_bytes = 0
        #: Connections the client closed while a script waited for it (wait_gone).
        self.gone = 0
        self.failures: list[BaseException] = []
        self._ended = threading.Semaphore(0)

    def wait_scripts(self, count: int = 1, seconds: float = 5.0) -> None:
        """Wait until ``count`` more scripts have ended (AssertionError after ``seconds``);
        a script's exception is raised here."""
        end = time.monotonic() + seconds
        for _ in range(count):
            assert self._ended.acquire(timeout=max(0.0, end - time.monotonic())), (
                "a script of the websocket server did not end"
            )
        if self.failures:
            raise self.failures[0]

    def closes(self) -> list[int]:
        """The codes of the close frames the client sent."""
        with self._lock:
            return [event.code for event in self.received if isinstance(event, CloseConnection)]

    @property
    def endpoint(self) -> str:
        if self._tls is None:
            return super().endpoint
        assert self._listener is not None
        return f"https://127.0.0.1:{self._listener.getsockname()[1]}"

    def __enter__(self) -> WebSocketServer:
        if self._tls is None:
            super().__enter__()
            return self
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.closing(conn):
            conn.settimeout(10)
            if self._tls is None:
                self._converse(conn)
                return
            try:
                tls = self._tls.wrap_socket(conn, server_side=True)
            except OSError:
                return
            with contextlib.closing(tls):
                self._converse(tls)

    def _converse(self, conn: socket.socket) -> None:
        """The members question answered (HTTPS), then the upgrade and the script."""
        while True:
            head = self._request_head(conn)
            if head is None:
                return
            method, target, headers = head
            if target.partition("?")[0] != "/1.0/cluster/members":
                break
            conn.sendall(incusd_error(500, "Server is not clustered"))
        with self._lock:
            self.requests.append(f"{method} {target}")
        try:
            self._script(Peer(self, conn, headers))
        except Exception as exc:  # raised again in the test's thread, at the end
            self.failures.append(exc)
        finally:
            self._ended.release()

    @staticmethod
    def _request_head(conn: socket.socket) -> tuple[str, str, dict[str, str]] | None:
        """The next request's method, target and headers (names in lower case); None when
        the client went away first. (The client sends no body, and nothing ahead.)"""
        request = b""
        while b"\r\n\r\n" not in request:
            try:
                data = conn.recv(65536)
            except OSError:
                return None
            if not data or len(request) > 65536:
                return None
            request += data
        lines = request.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return method, target, headers


@contextlib.contextmanager
def interrupted_after(seconds: float, *, asynchronous: bool) -> Iterator[None]:
    """Stop the block after ``seconds`` as a user would: the async flavour cancels it (a
    cancel scope), the blocking one gets Ctrl-C (SIGINT, the main thread's KeyboardInterrupt).
    Either way the block's end is where the test goes on."""
    if asynchronous:
        import anyio

        with anyio.move_on_after(seconds):
            yield
        return
    armed = True

    def interrupt(signum: int, frame: Any) -> None:
        if armed:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            yield
    finally:
        armed = False
        timer.cancel()
        timer.join()
        signal.signal(signal.SIGINT, previous)
