"""A throwaway Incus cluster of incusd daemons on loopback addresses (for tests).

    python scripts/throwaway_cluster.py run [--members 3] -- COMMAND [ARGS...]
        form a cluster, run COMMAND with INCUS_SOCKET / INCUS_DIR of the first member,
        INCUS_CLUSTER_URLS / INCUS_CLUSTER_CERT, and INCUS_CONF (unless set) in a temporary
        directory; stop the cluster

As a module:

    with ThrowawayCluster(members=3) as cluster:
        cluster.members[i]               # .name .url .address .socket_path .directory .pid
                                         # .server_certificate (the member's own server.crt)
        cluster.certificate              # cluster.crt: what every member serves over HTTPS
        cluster.urls                     # https://127.0.X.Y:PORT, one per member
        cluster.trust("client.crt")      # trust a client certificate cluster-wide
        cluster.statuses()               # {"member1": "Online", ...}, as a member sees it
        cluster.stop_member(1)           # SIGTERM by PID, wait for the exit: seconds taken
        cluster.kill_member(1)           # SIGKILL by PID
        cluster.start_member(1)          # restart on the same directory, until Online again
        cluster.wait_for_status(1, "Offline")   # until the other members say so: seconds

Members are indexed from 0 (``cluster.members[0]`` is ``member1``, the bootstrap member) or
named. Each member serves the API on its own loopback address (``127.0.X.Y``, ``.Y+1``, ...,
with X and Y random, checked to be unused) and a free port; the members talk to each other
over the same addresses, and to nothing else.

The cluster certificate is the one Incus makes: it names only the host name, 127.0.0.1 and
::1, so it *pins* the members (the incus CLI compares it whole) but fails a hostname check on
any other address. ``address_certificate=True`` (or ``use_address_certificate()``) installs,
cluster-wide, a certificate made with openssl whose names are the members' addresses, which
passes a hostname check too.

Measured here (incusd 6.0.4, 2 vCPUs):

* forming: about 1.5 s (three daemons started side by side in 0.3-0.5 s; member1
  bootstrapped, the others joined one after the other with join tokens, 0.4 s each; all
  through the REST API on the unix sockets, no incus CLI). A formation that fails after the
  daemons started is tried once more from scratch (``attempts=``): a join once hung until
  "context deadline exceeded" in about 30 formations.
* a member's SIGTERM: 0.1-0.3 s while the others keep quorum. It answers HTTP 500 "Failed to
  begin transaction: sql: database is closed" for the last 10-150 ms before it exits.
* Offline for the others: ``cluster.offline_threshold`` after its last heartbeat. The
  cluster is formed with 11 s (Incus's least; its default is 20 s): 7.5-10 s after an exit.
* a restart on the same directory: answers in 0.2-0.3 s, Online for every member in 0.5-5 s.
* ``stop()``: the members one after the other, the bootstrap member last (0.1 s each, the
  last one up to 3.5 s: 0.6-4 s in all); SIGTERM to all at once takes 11 s. Directories are
  removed afterwards.

Caution (incusd 6.0.4): a member that once refused a configuration change (``PATCH /1.0``
with an invalid or unknown key) hangs in db.OpenCluster when it is restarted later, deaf to
SIGTERM. ``start_member`` then raises DaemonUnavailable (and ends it) after ``start_timeout``.

Like throwaway_incusd.py this needs root and incusd, uses only the standard library, and
ends processes only by their own PID.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from throwaway_incusd import (
    REFUSE_TO_START,
    DaemonUnavailable,
    ThrowawayIncusd,
    command_to_run,
    incusd_binary,
    run_parser,
    unix_request,
)

__all__ = ["ClusterMember", "DaemonUnavailable", "ThrowawayCluster", "free_loopback_addresses"]


# --- addresses ----------------------------------------------------------------------------


def _listening_ipv4() -> set[str]:
    """IPv4 addresses that something listens on (TCP), from /proc/net/tcp; ``0.0.0.0`` for a
    wildcard listener."""
    found: set[str] = set()
    try:
        with open("/proc/net/tcp", encoding="ascii") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) < 4 or fields[3] != "0A":  # 0A: LISTEN
                    continue
                address_hex = fields[1].split(":")[0]
                packed = int(address_hex, 16).to_bytes(4, "little")
                found.add(socket.inet_ntoa(packed))
    except OSError:
        pass
    return found


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def free_loopback_addresses(count: int, *, attempts: int = 50) -> list[str]:
    """``count`` consecutive addresses ``127.0.X.Y``.. (X, Y random) that nothing listens on,
    each with a free port: ``["127.0.X.Y:PORT", ...]``."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        third, first = rng.randint(1, 254), rng.randint(2, 254 - count)
        hosts = [f"127.0.{third}.{first + k}" for k in range(count)]
        if _listening_ipv4() & set(hosts):
            continue
        try:
            return [f"{host}:{_free_port(host)}" for host in hosts]
        except OSError:
            continue
    raise DaemonUnavailable(f"found no {count} free loopback addresses in {attempts} tries")


# --- one member ---------------------------------------------------------------------------


class ClusterMember(ThrowawayIncusd):
    """One incusd of a throwaway cluster: a ThrowawayIncusd that keeps a name and an address,
    and can be stopped and started again on the same directory."""

    def __init__(
        self, name: str, address: str, *, start_timeout: float, parent_dir: str | None
    ) -> None:
        super().__init__(start_timeout=start_timeout, parent_dir=parent_dir)
        self.name = name
        #: ``127.0.X.Y:PORT``: the API and the cluster traffic.
        self.address = address
        self.https_url = f"https://{address}"
        #: Every PID this member has had (a restart makes a new process).
        self.pids: list[int] = []
        #: Seconds the last stop or kill took until the process had exited.
        self.last_stop_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}"

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ClusterMember:
        super().start()
        self.pids.append(self.pid)
        return self

    def relaunch(self) -> ClusterMember:
        """Start incusd again on this stopped member's directory; return once it answers
        GET /1.0. (Not ThrowawayIncusd.restart: this one never stops the member itself.)"""
        assert self.directory is not None, "the member was never started"
        if self.running:
            raise RuntimeError(f"{self.name} is still running (pid {self.pid})")
        log = open(self.directory / "out.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                [incusd_binary(), "--group", "root", "--logfile", str(self.log_file)],
                env=dict(os.environ, INCUS_DIR=str(self.directory)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pids.append(self.process.pid)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise DaemonUnavailable(f"{self.name}: incusd exited during its restart")
            try:
                status, _ = unix_request(self.socket_path, "GET", "/1.0", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                # Seen: a restarted member that hangs in db.OpenCluster, deaf to SIGTERM.
                self.terminate(signal.SIGTERM, timeout=5)
                raise DaemonUnavailable(
                    f"{self.name}: incusd did not answer within {self.start_timeout} s of its "
                    "restart (ended)"
                )
            time.sleep(0.02)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Send ``sig`` to this member's PID and wait until it exits (SIGKILL after
        ``timeout``); keep the directory. Returns the seconds until the exit."""
        if not self.running:
            return 0.0
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(
                f"throwaway cluster: {self.name} (pid {self.pid}) did not exit within "
                f"{timeout} s of signal {sig}: killed",
                file=sys.stderr,
            )
            self.process.kill()
            self.process.wait(timeout)
        self.last_stop_seconds = time.monotonic() - started
        return self.last_stop_seconds

    @property
    def log_file(self) -> Path:
        assert self.directory is not None
        return self.directory / "incusd.log"

    def log_tail(self) -> str:
        """The end of the daemon's output (its log lines, and anything it printed)."""
        if self.directory is None:
            return "(no output: the directory is gone)"
        return self._log_tail()

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        state = "running" if self.running else "stopped"
        return f"<ClusterMember {self.name} {self.url} pid={pid} {state}>"


# --- the cluster --------------------------------------------------------------------------


def _wait_operation(
    member: ClusterMember, status: int, answer: dict[str, Any], what: str, timeout: float
) -> Any:
    """Wait for the operation a 202 answer started; raise unless it succeeded in time."""
    if status != 202 or not answer.get("operation"):
        raise RuntimeError(f"{what} on {member.name} -> {status}: {answer.get('error')}")
    status, waited = unix_request(
        member.socket_path,
        "GET",
        f"{answer['operation']}/wait?timeout={max(1, int(timeout))}",
        timeout=timeout + 10,
    )
    if status == 200 and (waited.get("metadata") or {}).get("status") == "Running":
        raise RuntimeError(f"{what} on {member.name} did not finish within {timeout:.0f} s")
    metadata = waited.get("metadata") or {}
    if status != 200 or waited.get("type") == "error" or metadata.get("status") != "Success":
        error = waited.get("error") or metadata.get("err") or metadata.get("status")
        raise RuntimeError(f"{what} on {member.name} failed ({status}): {error}")
    return metadata.get("metadata")


def _certificate_der(pem_text: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_text)


def served_certificate(address: str, timeout: float = 5.0) -> str:
    """The certificate (PEM) an HTTPS server presents, not verified."""
    host, port = address.rsplit(":", 1)
    return ssl.get_server_certificate((host, int(port)), timeout=timeout)


class _FormingFailed(DaemonUnavailable):
    """A member did not bootstrap, join or come Online (worth a second attempt)."""


class ThrowawayCluster:
    """A cluster of throwaway incusd daemons on loopback addresses, formed and stopped here."""

    def __init__(
        self,
        members: int = 3,
        *,
        start_timeout: float = 60.0,
        join_timeout: float = 20.0,
        attempts: int = 2,
        parent_dir: str | None = None,
        address_certificate: bool = False,
        offline_threshold: int | None = 11,
        name_prefix: str = "member",
    ) -> None:
        if members < 1 or attempts < 1:
            raise ValueError("a cluster needs at least one member and one attempt")
        if offline_threshold is not None and offline_threshold < 11:
            # incusd refuses it ("must be greater than '10'"), and a member that was refused a
            # configuration change once hangs when it is restarted later (incusd 6.0.4).
            raise ValueError("cluster.offline_threshold must be at least 11 (seconds)")
        #: Seconds without a heartbeat before the others call a member Offline (cluster-wide
        #: ``cluster.offline_threshold``; Incus's default is 20, 11 the least it accepts).
        self.offline_threshold = offline_threshold
        self.size = members
        self.start_timeout = start_timeout
        #: The most a join may take (one takes about 0.4 s).
        self.join_timeout = join_timeout
        self.attempts = attempts
        #: Why earlier attempts at forming the cluster failed.
        self.failed_attempts: list[str] = []
        self.parent_dir = parent_dir
        self.name_prefix = name_prefix
        self._address_certificate = address_certificate
        self.members: list[ClusterMember] = []
        #: Where the address certificate and its key were made (use_address_certificate()).
        self._scratch: Path | None = None
        self._certificate_path: str | None = None
        #: Seconds: starting the daemons, forming the cluster (bootstrap and joins), in all.
        self.timings: dict[str, float] = {}

    # -- what tests use --------------------------------------------------------------------

    @property
    def certificate(self) -> str:
        """The cluster certificate (PEM file) every member serves: pass it as ``verify=``."""
        assert self._certificate_path is not None, "the cluster is not formed"
        return self._certificate_path

    @property
    def urls(self) -> list[str]:
        return [member.url for member in self.members]

    def member(self, which: int | str | ClusterMember) -> ClusterMember:
        """A member by index (0-based), name or itself."""
        if isinstance(which, ClusterMember):
            return which
        if isinstance(which, int):
            return self.members[which]
        for member in self.members:
            if member.name == which:
                return member
        raise KeyError(f"no member {which!r} in {[m.name for m in self.members]}")

    def running_members(self) -> list[ClusterMember]:
        return [member for member in self.members if member.running]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        via: int | str | ClusterMember | None = None,
    ) -> dict[str, Any]:
        """One request on a member's unix socket (the first running member by default)."""
        member = self._via(via)
        return member.request(method, path, body)

    def statuses(self, via: int | str | ClusterMember | None = None) -> dict[str, str]:
        """``{name: status}`` from ``GET /1.0/cluster/members?recursion=1`` on one member."""
        answer = self.request("GET", "/1.0/cluster/members?recursion=1", via=via)
        return {entry["server_name"]: entry["status"] for entry in answer["metadata"]}

    def trust(self, certificate_pem_path: str | os.PathLike[str], name: str | None = None) -> None:
        """Trust a client certificate (PEM file) cluster-wide: the trust store is the
        cluster's database, so every member accepts it."""
        der = _certificate_der(Path(certificate_pem_path).read_text())
        self.request(
            "POST",
            "/1.0/certificates",
            {
                "name": name or f"throwaway-client-{hashlib.sha256(der).hexdigest()[:12]}",
                "type": "client",
                "certificate": base64.b64encode(der).decode(),
            },
        )

    def wait_for_status(
        self,
        which: int | str | ClusterMember,
        status: str,
        *,
        via: Sequence[int | str | ClusterMember] | None = None,
        timeout: float = 60.0,
    ) -> float:
        """Wait until every running member (or those in ``via``) reports ``which`` with
        ``status`` (``Online``, ``Offline``, ...); return the seconds waited."""
        target = self.member(which)
        started = time.monotonic()
        deadline = started + timeout
        last: dict[str, str] = {}
        while True:
            observers = (
                [self.member(v) for v in via]
                if via is not None
                else [m for m in self.running_members() if m is not target or status == "Online"]
            )
            try:
                seen = [self.statuses(via=observer) for observer in observers]
                last = {
                    o.name: s.get(target.name, "?") for o, s in zip(observers, seen, strict=True)
                }
                if observers and all(v.lower() == status.lower() for v in last.values()):
                    return time.monotonic() - started
            except (OSError, RuntimeError, ValueError) as exc:
                last = {"error": str(exc)}
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{target.name} is not {status} after {timeout} s: the members say {last}"
                )
            time.sleep(0.1)

    def stop_member(self, which: int | str | ClusterMember, timeout: float = 15.0) -> float:
        """SIGTERM to the member's PID; wait until it exited. Returns the seconds it took."""
        return self.member(which).terminate(signal.SIGTERM, timeout)

    def kill_member(self, which: int | str | ClusterMember) -> float:
        """SIGKILL to the member's PID; wait until it exited. Returns the seconds it took."""
        return self.member(which).terminate(signal.SIGKILL, 10.0)

    def start_member(self, which: int | str | ClusterMember, timeout: float = 60.0) -> float:
        """Start a stopped member again on its directory; return the seconds until it answers
        and every running member reports it Online."""
        member = self.member(which)
        started = time.monotonic()
        try:
            member.relaunch()
            self.wait_for_status(member, "Online", timeout=timeout)
        except (DaemonUnavailable, TimeoutError, OSError, RuntimeError) as exc:
            raise DaemonUnavailable(
                f"{member.name} ({member.url}) did not come back: {exc}\n{member.log_tail()}"
            ) from exc
        return time.monotonic() - started

    def use_address_certificate(self) -> str:
        """Install a cluster certificate (made with openssl) that names every member's address,
        so a client that checks host names accepts it too; return its path once every member
        serves it."""
        if shutil.which("openssl") is None:
            raise DaemonUnavailable("openssl is needed to make a cluster certificate")
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="incus-cluster-", dir=self.parent_dir))
        cert, key = self._scratch / "cluster.crt", self._scratch / "cluster.key"
        names = ",".join(
            ["DNS:localhost", "IP:127.0.0.1", "IP:::1"] + [f"IP:{m.host}" for m in self.members]
        )
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:secp384r1", "-sha384", "-nodes",
                "-days", "3650", "-subj", "/O=incus_images tests/CN=throwaway cluster",
                "-addext", f"subjectAltName={names}",
                "-addext", "extendedKeyUsage=serverAuth,clientAuth",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        pem = cert.read_text()
        self.request(
            "PUT",
            "/1.0/cluster/certificate",
            {"cluster_certificate": pem, "cluster_certificate_key": key.read_text()},
        )
        self._wait_served(pem, timeout=30)
        self._certificate_path = str(cert)
        return self._certificate_path

    # -- forming ---------------------------------------------------------------------------

    def start(self) -> ThrowawayCluster:
        """Start the daemons and form the cluster. A formation that fails after the daemons
        started (a join that hangs, seen once in ~30 formations) is retried from scratch, on
        new addresses, ``attempts`` times in all; nothing is left running when it raises."""
        incusd_binary()  # refused, or missing: before anything is made
        if os.geteuid() != 0:
            raise DaemonUnavailable("a throwaway cluster must be started as root")
        for attempt in range(1, self.attempts + 1):
            try:
                self._form()
            except _FormingFailed as exc:
                self.stop()
                self.failed_attempts.append(str(exc))
                if attempt == self.attempts:
                    raise
                first_line = str(exc).split("\n", 1)[0]
                print(f"throwaway cluster: {first_line}; forming it again", file=sys.stderr)
            except BaseException:
                self.stop()
                raise
            else:
                return self
        raise AssertionError("unreachable")

    def _form(self) -> None:
        began = time.monotonic()
        self.timings = {}
        addresses = free_loopback_addresses(self.size)
        self.members = [
            ClusterMember(
                f"{self.name_prefix}{k + 1}",
                address,
                start_timeout=self.start_timeout,
                parent_dir=self.parent_dir,
            )
            for k, address in enumerate(addresses)
        ]
        self._start_daemons()
        self.timings["daemons"] = time.monotonic() - began
        formed = time.monotonic()
        self._bootstrap(self.members[0])
        for member in self.members[1:]:
            self._join(member)
        for member in self.members:
            self._step(
                member,
                "coming Online",
                lambda m=member: self.wait_for_status(m, "Online", timeout=self.start_timeout),
            )
        self.timings["form"] = time.monotonic() - formed
        self._certificate_path = self._check_certificates()
        if self._address_certificate:
            self.use_address_certificate()
        self.timings["total"] = time.monotonic() - began

    def _start_daemons(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.members)) as pool:
            futures = [pool.submit(member.start) for member in self.members]
            errors = []
            for member, future in zip(self.members, futures, strict=True):
                try:
                    future.result()
                except (DaemonUnavailable, OSError, subprocess.SubprocessError) as exc:
                    errors.append(f"{member.name}: {exc}")
        if errors:
            raise DaemonUnavailable("a cluster member did not start:\n" + "\n".join(errors))

    def _step(self, member: ClusterMember, what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except DaemonUnavailable:
            raise
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            tail = member.log_tail()
            # A member whose join went wrong may not heed SIGTERM for long: do not wait.
            member.terminate(signal.SIGTERM, timeout=3)
            raise _FormingFailed(
                f"{member.name} ({member.url}): {what} failed: {exc}\n{tail}"
            ) from exc

    def _bootstrap(self, member: ClusterMember) -> None:
        def bootstrap() -> None:
            member.request("PATCH", "/1.0", {"config": {"core.https_address": member.address}})
            status, answer = unix_request(
                member.socket_path,
                "PUT",
                "/1.0/cluster",
                {"server_name": member.name, "enabled": True},
            )
            _wait_operation(member, status, answer, "bootstrapping", self.start_timeout)
            if self.offline_threshold is not None:
                threshold = str(self.offline_threshold)
                member.request(
                    "PATCH", "/1.0", {"config": {"cluster.offline_threshold": threshold}}
                )

        self._step(member, "bootstrapping the cluster", bootstrap)

    def _join_token(self, sponsor: ClusterMember, name: str) -> str:
        """A join token for ``name``, issued by ``sponsor``: what ``incus cluster add`` prints."""
        status, answer = unix_request(
            sponsor.socket_path, "POST", "/1.0/cluster/members", {"server_name": name}
        )
        if status != 202:
            raise RuntimeError(f"POST /1.0/cluster/members -> {status}: {answer.get('error')}")
        issued = answer["metadata"]["metadata"]
        token = {
            "server_name": issued["serverName"],
            "fingerprint": issued["fingerprint"],
            "addresses": issued["addresses"],
            "secret": issued["secret"],
            "expires_at": issued["expiresAt"],
        }
        return base64.b64encode(json.dumps(token).encode()).decode()

    def _join(self, member: ClusterMember) -> None:
        sponsor = self.members[0]

        def join() -> None:
            token = self._join_token(sponsor, member.name)
            certificate = (sponsor.directory / "cluster.crt").read_text()  # type: ignore[operator]
            member.request("PATCH", "/1.0", {"config": {"core.https_address": member.address}})
            status, answer = unix_request(
                member.socket_path,
                "PUT",
                "/1.0/cluster",
                {
                    "server_name": member.name,
                    "enabled": True,
                    "server_address": member.address,
                    "cluster_address": sponsor.address,
                    "cluster_certificate": certificate,
                    "cluster_token": token,
                    "member_config": [],
                },
                timeout=60,
            )
            _wait_operation(member, status, answer, "joining", self.join_timeout)

        self._step(member, "joining the cluster", join)

    def _check_certificates(self) -> str:
        """Every member holds and serves the same cluster.crt; return the first one's path."""
        first = self.members[0]
        assert first.directory is not None
        path = str(first.directory / "cluster.crt")
        pem = Path(path).read_text()
        for member in self.members:
            assert member.directory is not None
            held = (member.directory / "cluster.crt").read_text()
            if _certificate_der(held) != _certificate_der(pem):
                raise DaemonUnavailable(
                    f"{member.name} holds another cluster.crt than {first.name}"
                )
        self._wait_served(pem, timeout=10)
        return path

    def _wait_served(self, pem: str, timeout: float) -> None:
        expected = _certificate_der(pem)
        deadline = time.monotonic() + timeout
        for member in self.running_members():
            while True:
                try:
                    if _certificate_der(served_certificate(member.address)) == expected:
                        break
                except (OSError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise DaemonUnavailable(
                        f"{member.name} ({member.url}) does not serve the cluster certificate"
                    )
                time.sleep(0.05)

    def _via(self, via: int | str | ClusterMember | None) -> ClusterMember:
        if via is not None:
            return self.member(via)
        running = self.running_members()
        if not running:
            raise RuntimeError("no member of the cluster is running")
        return running[0]

    # -- stopping --------------------------------------------------------------------------

    def stop(self, timeout: float = 15.0) -> dict[str, float]:
        """Stop every member (SIGTERM by PID, the bootstrap member last; SIGKILL after
        ``timeout``) and remove their directories. Returns the seconds each stop took."""
        taken: dict[str, float] = {}
        for member in reversed(self.members):
            try:
                if member.running:
                    taken[member.name] = member.terminate(signal.SIGTERM, timeout)
            finally:
                member.stop()  # the process is gone: unmounts and removes the directory
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        return taken

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


HELP = """\
Form a throwaway Incus cluster of incusd daemons on loopback addresses (127.0.X.Y, one per
member, each in a fresh directory under /tmp), run one command against it, then stop the
members (by their own PIDs, never by name) and remove their directories. The command gets the
first member's INCUS_SOCKET and INCUS_DIR, every member's URL in INCUS_CLUSTER_URLS, the
cluster certificate's path in INCUS_CLUSTER_CERT, and INCUS_CONF (unless set) in a temporary
directory; its exit status is this script's.
"""

HELP_EPILOG = f"""\
needs root and incusd, as throwaway_incusd.py does. When {REFUSE_TO_START} is set,
no cluster forms.

examples:
  python3 scripts/throwaway_cluster.py run -- sh -c 'echo $INCUS_CLUSTER_URLS'
  python3 scripts/throwaway_cluster.py run --members 5 --address-certificate -- pytest -k cluster
"""


def main(argv: list[str] | None = None) -> int:
    parser, run = run_parser(HELP, HELP_EPILOG)
    run.add_argument("--members", type=int, default=3, help="how many daemons (default: 3)")
    run.add_argument(
        "--address-certificate",
        action="store_true",
        help="serve a certificate naming the members' addresses (passes a hostname check)",
    )
    args = parser.parse_args(argv)
    command = command_to_run(parser, args)
    with ThrowawayCluster(args.members, address_certificate=args.address_certificate) as cluster:
        for member in cluster.members:
            print(
                f"throwaway cluster: {member.name} pid {member.pid} {member.url} "
                f"{member.socket_path}",
                file=sys.stderr,
            )
        first = cluster.members[0]
        with tempfile.TemporaryDirectory(prefix="incus-conf-") as conf:
            env = dict(
                os.environ,
                INCUS_SOCKET=first.socket_path,
                INCUS_DIR=str(first.directory),
                INCUS_CLUSTER_URLS=" ".join(cluster.urls),
                INCUS_CLUSTER_CERT=cluster.certificate,
            )
            # The incus CLI writes its configuration on first use: not into ~/.config/incus.
            env.setdefault("INCUS_CONF", conf)
            return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
