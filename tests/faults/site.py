"""One daemon under trial: the injectors in front of it, its state read behind the SDK's back."""

from __future__ import annotations

import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from throwaway_incusd import ThrowawayIncusd
from tiny_image import split_image, unified_image

from tests.helpers import sha256

from .fault import Injector, Traffic
from .inprocess import InProcessInjector
from .proxy import FaultProxy

#: Random payload of every test image: a few hundred KiB, so that most cuts land in bodies.
PAYLOAD = 320 * 1024
#: The name of the in-process injector (the proxies are named after their transport).
IN_PROCESS = "in-process"
#: The payload on the daemon that is killed: larger than the socket buffers, so that the
#: daemon is still sending an export when it dies.
KILL_PAYLOAD = 8 * 1024 * 1024


class Site:
    """One daemon (serving HTTPS too, and trusting ``certificate``), its injectors (a proxy in
    front of its HTTPS port, one in front of its unix socket, and the in-process transport on
    that socket), the images its export trials read, and the calibration of its calls."""

    def __init__(
        self, daemon: ThrowawayIncusd, certificate: tuple[str, str], *, payload: int = PAYLOAD
    ) -> None:
        if daemon.https_url is None:
            raise ValueError("the daemon must serve HTTPS (enable_https) and trust certificate")
        self.daemon = daemon
        self.certificate = certificate
        #: The random payload of this site's images, in bytes.
        self.payload = payload
        address = urlsplit(daemon.https_url)
        assert address.hostname is not None
        assert address.port is not None
        self.in_process = InProcessInjector(daemon.socket_path)
        #: By the names TrialSpec.injector gives.
        self.injectors: dict[str, Injector] = {
            "https": FaultProxy((address.hostname, address.port)),
            "unix": FaultProxy(daemon.socket_path),
            IN_PROCESS: self.in_process,
        }
        self._raw: httpx.Client | None = None
        self.exports: dict[str, str] = {}
        #: The traffic of each call, unfaulted, by (call, injector).
        self.calibration: dict[tuple[str, str], Traffic] = {}
        #: Tasks that were running on the daemon when the current trial began.
        self.foreign_tasks: set[str] = set()
        self.payloads: dict[str, int] = {}

    @property
    def raw(self) -> httpx.Client:
        """Plain httpx on the daemon's own socket, behind the SDK's and the injectors' back."""
        if self._raw is None:
            transport = httpx.HTTPTransport(uds=self.daemon.socket_path)
            self._raw = httpx.Client(transport=transport, base_url="http://incus", timeout=60)
        return self._raw

    def reconnect(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def close(self) -> None:
        for injector in self.injectors.values():
            injector.close()
        self.reconnect()

    def client_options(
        self, injector: str, flavour: str, timeout: float
    ) -> tuple[str, dict[str, Any]]:
        """The endpoint and options of a client of this flavour whose calls go through
        ``injector``."""
        options: dict[str, Any] = {"timeout": timeout}
        if injector == IN_PROCESS:
            options["transport"] = self.in_process.transport(flavour)
            return self.in_process.endpoint, options
        proxy = self.injectors[injector]
        assert isinstance(proxy, FaultProxy)
        if injector == "https":
            options["cert"] = self.certificate
            options["verify"] = self.daemon.server_certificate
        return proxy.endpoint, options

    # -- the daemon's state ------------------------------------------------------------------

    def images(self, project: str = "default") -> set[str]:
        params = {"recursion": "0", "project": project}
        response = self.raw.get("/1.0/images", params=params)
        response.raise_for_status()
        return {url.rsplit("/", 1)[-1].split("?", 1)[0] for url in response.json()["metadata"]}

    def ensure_project(self, name: str) -> None:
        """A project with images of its own (copy trials copy into it)."""
        if self.raw.get(f"/1.0/projects/{name}").status_code == 200:
            return
        body = {"name": name, "config": {"features.images": "true", "features.profiles": "false"}}
        self.raw.post("/1.0/projects", json=body).raise_for_status()

    def tokens(self) -> list[str]:
        """The download secrets (token operations) open on the daemon."""
        response = self.raw.get("/1.0/operations", params={"recursion": "1"})
        response.raise_for_status()
        running = (response.json()["metadata"] or {}).get("running") or []
        return [op["id"] for op in running if op.get("class") == "token"]

    def running_tasks(self) -> list[str]:
        # Every project's: copy trials run the target's side in a project of its own.
        params = {"recursion": "1", "all-projects": "true"}
        response = self.raw.get("/1.0/operations", params=params)
        response.raise_for_status()
        running = (response.json()["metadata"] or {}).get("running") or []
        return [op["id"] for op in running if op.get("class") != "token"]

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until no proxied connection is open and no task runs, twice in a row (tasks
        that ran before the trial began are someone else's: they are not waited for)."""
        for injector in self.injectors.values():
            if not injector.wait_idle(timeout):
                injector.abort_all()
                injector.wait_idle(5)
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            if set(self.running_tasks()) - self.foreign_tasks:
                quiet = 0
                time.sleep(0.02)
            else:
                quiet += 1
                if quiet < 2:
                    time.sleep(0.1)

    def wait_operation(self, op_id: str) -> dict[str, Any]:
        response = self.raw.get(f"/1.0/operations/{op_id}/wait", params={"timeout": "30"})
        return dict(response.json())

    def delete_image(self, fingerprint: str, project: str = "default") -> None:
        response = self.raw.delete(f"/1.0/images/{fingerprint}", params={"project": project})
        if response.status_code == 202:
            self.wait_operation(response.json()["metadata"]["id"])

    def start_upload(self, data: bytes) -> str:
        response = self.raw.post(
            "/1.0/images", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        response.raise_for_status()
        return str(response.json()["metadata"]["id"])

    def store(self, data: bytes, rootfs: bytes | None = None) -> str:
        """Store an image behind the SDK's back; return its fingerprint."""
        if rootfs is None:
            op_id = self.start_upload(data)
        else:
            files = [
                ("metadata", ("meta.tar.gz", data, "application/octet-stream")),
                ("rootfs", ("rootfs.tar.gz", rootfs, "application/octet-stream")),
            ]
            response = self.raw.post("/1.0/images", files=files)
            response.raise_for_status()
            op_id = str(response.json()["metadata"]["id"])
        finished = self.wait_operation(op_id)
        if finished.get("type") == "error":
            raise RuntimeError(f"could not store an image: {finished.get('error')}")
        fingerprint = str(finished["metadata"]["metadata"]["fingerprint"])
        assert fingerprint == sha256(data, rootfs or b"")
        return fingerprint

    def ensure_exports(self) -> None:
        """The unified and the split image every export trial reads (stored again if lost)."""
        stored = self.images()
        if self.exports.get("unified") not in stored:
            self.exports["unified"] = self.store(unified_image(payload_size=self.payload))
        if self.exports.get("split") not in stored:
            metadata, rootfs = split_image(payload_size=self.payload)
            self.exports["split"] = self.store(metadata, rootfs)

    def create_token(self) -> str:
        """A download-secret operation: it runs until the secret is used or cancelled."""
        fingerprint = self.exports["unified"]
        response = self.raw.post(f"/1.0/images/{fingerprint}/secret", json={})
        response.raise_for_status()
        return str(response.json()["metadata"]["id"])

    def cancel_operation(self, op_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.raw.delete(f"/1.0/operations/{op_id}")
