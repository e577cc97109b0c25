"""Start and stop a throwaway incusd in a temporary directory (for tests, the demo and benchmarks).

    python scripts/throwaway_incusd.py run -- COMMAND [ARGS...]
        start a daemon, run COMMAND with INCUS_SOCKET (and INCUS_DIR) pointing at it, stop it

As a module:

    with ThrowawayIncusd() as daemon:
        daemon.socket_path            # talk to it
        daemon.enable_https()         # also serve https://127.0.0.1:<free port>

    ThrowawayIncusd(network_namespace=True)   # alone in a network namespace of its own: it
                                              # cannot reach the host's loopback addresses

A throwaway daemon needs root and the incusd binary (scripts/install-incus.sh installs it).
It is stopped by its own PID, never by name, and its directory is removed afterwards. Only the
Python standard library is used, so this runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_INCUSD = "/usr/libexec/incus/incusd"

#: When this environment variable is set, no throwaway daemon starts, and its value says why.
#: The test suite sets it while a test not marked ``incusd`` runs (tests/conftest.py).
REFUSE_TO_START = "THROWAWAY_INCUSD_REFUSED"


class DaemonUnavailable(RuntimeError):
    """A throwaway daemon cannot be had on this machine; the message says why."""


class DaemonRefused(RuntimeError):
    """This process was told not to start a daemon (REFUSE_TO_START). Not a DaemonUnavailable:
    a test that meets it fails, it is never skipped."""


def incusd_binary() -> str:
    """The incusd to start; refuses when REFUSE_TO_START is set."""
    reason = os.environ.get(REFUSE_TO_START)
    if reason:
        raise DaemonRefused(f"not starting a throwaway incusd: {reason}")
    path = os.environ.get("INCUSD", DEFAULT_INCUSD)
    if not os.access(path, os.X_OK):
        raise DaemonUnavailable(
            f"incusd not found at {path}: install it with scripts/install-incus.sh (as root)"
        )
    return path


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("incus", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def unix_request(
    socket_path: str, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """One JSON request over the unix socket; returns (status, decoded body)."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data.strip() else {}
    finally:
        conn.close()


def _mounts_below(directory: Path) -> list[str]:
    prefix = str(directory) + "/"
    mounts = []
    with open("/proc/self/mounts", encoding="utf-8") as table:
        for line in table:
            mount_point = line.split()[1].replace("\\040", " ")
            if mount_point.startswith(prefix):
                mounts.append(mount_point)
    # Deepest first.
    return sorted(mounts, key=len, reverse=True)


class ThrowawayIncusd:
    """A private incusd in a fresh temporary directory, started and stopped by this object."""

    def __init__(
        self,
        *,
        start_timeout: float = 60.0,
        parent_dir: str | None = None,
        network_namespace: bool = False,
    ) -> None:
        self.start_timeout = start_timeout
        self.parent_dir = parent_dir
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.https_url: str | None = None
        #: The network namespace this object made for the daemon, if asked for one.
        self.namespace: str | None = None
        self._wants_namespace = network_namespace

    @property
    def socket_path(self) -> str:
        assert self.directory is not None, "the daemon is not started"
        return str(self.directory / "unix.socket")

    @property
    def endpoint(self) -> str:
        return "unix://" + self.socket_path

    @property
    def server_certificate(self) -> str:
        assert self.directory is not None, "the daemon is not started"
        return str(self.directory / "server.crt")

    @property
    def pid(self) -> int:
        assert self.process is not None, "the daemon is not started"
        return self.process.pid

    def start(self) -> ThrowawayIncusd:
        incusd_binary()  # refused, or missing: before anything is made
        if os.geteuid() != 0:
            raise DaemonUnavailable("a throwaway incusd must be started as root")
        # A short path under /tmp: unix socket paths below it must stay under 108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="incusd-", dir=self.parent_dir))
        self.directory.chmod(0o711)
        if self._wants_namespace:
            self._make_namespace()
        return self._launch()

    def restart(self) -> None:
        """Stop this daemon (SIGTERM, by PID) and start it again on the same directory, as a
        package upgrade or a reboot would: clients' pooled connections die."""
        assert self.process is not None, "the daemon is not started"
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)
        self._launch()

    def _launch(self) -> ThrowawayIncusd:
        assert self.directory is not None
        binary = incusd_binary()
        log = open(self.directory / "out.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, INCUS_DIR=str(self.directory))
        command = [binary, "--group", "root", "--logfile", str(self.directory / "incusd.log")]
        if self.namespace is not None:
            command = ["ip", "netns", "exec", self.namespace, *command]
        try:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C aimed at the tests does not hit the daemon
            )
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                output = self._log_tail()
                self.stop()
                raise DaemonUnavailable(f"incusd exited during start-up:\n{output}")
            try:
                status, _ = unix_request(self.socket_path, "GET", "/1.0", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                output = self._log_tail()
                self.stop()
                raise DaemonUnavailable(
                    f"incusd did not answer within {self.start_timeout} s:\n{output}"
                )
            time.sleep(0.02)

    def _make_namespace(self) -> None:
        """A fresh network namespace with only its own loopback, in which the daemon runs
        (``ip netns exec`` execs it: the daemon keeps the PID)."""
        if shutil.which("ip") is None:
            raise DaemonUnavailable("a network namespace needs the ip command (iproute2)")
        name = f"incus-images-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.namespace = name
        subprocess.run(
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
        )

    def _log_tail(self) -> str:
        assert self.directory is not None
        try:
            lines = (self.directory / "out.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no output)"
        return "\n".join(lines[-20:])

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        status, data = unix_request(self.socket_path, method, path, body)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {data.get('error')}")
        return data

    def enable_https(self, port: int | None = None) -> str:
        """Serve the API on https://127.0.0.1:port (a free port by default); return the URL."""
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        address = f"127.0.0.1:{port}"
        self.request("PATCH", "/1.0", {"config": {"core.https_address": address}})
        self.https_url = f"https://{address}"
        return self.https_url

    def trust(self, certificate_pem: str, name: str = "throwaway-client") -> None:
        """Add a client certificate (PEM file) to the daemon's trust store."""
        der = ssl.PEM_cert_to_DER_cert(Path(certificate_pem).read_text())
        self.request(
            "POST",
            "/1.0/certificates",
            {"name": name, "type": "client", "certificate": base64.b64encode(der).decode()},
        )

    def stop(self, timeout: float = 20.0, *, stop_instances: bool = False) -> None:
        """Stop this daemon (by PID) and remove its directory.

        A daemon stopped by a signal leaves its running containers running: with
        ``stop_instances`` every instance is stopped and deleted first."""
        if stop_instances and self.process is not None and self.process.poll() is None:
            self._delete_instances()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.directory is not None:
            for mount_point in _mounts_below(self.directory):
                subprocess.run(["umount", "-l", mount_point], check=False)
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self.namespace is not None:
            self._stop_namespace_processes()
            subprocess.run(["ip", "netns", "delete", self.namespace], check=False)
            self.namespace = None

    def _stop_namespace_processes(self, timeout: float = 5.0) -> None:
        """Stop, by PID, what the daemon left running in its network namespace.

        incusd does not stop a network's dnsmasq when it stops (a daemon restarting keeps
        its networks up), so a daemon that made a bridge (incus-user does) would leave one
        behind for good. Everything in this namespace was started in it, by this object.
        """
        assert self.namespace is not None
        listed = subprocess.run(
            ["ip", "netns", "pids", self.namespace], capture_output=True, text=True, check=False
        )
        pids = [int(pid) for pid in listed.stdout.split()]
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while pids and time.monotonic() < deadline:
                pids = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
                time.sleep(0.02)
            if not pids:
                return

    def _delete_instances(self) -> None:
        try:
            names = self.request("GET", "/1.0/instances").get("metadata") or []
            for url in names:
                name = url.rsplit("/", 1)[-1]
                for method, path, body in (
                    ("PUT", f"/1.0/instances/{name}/state", {"action": "stop", "force": True}),
                    ("DELETE", f"/1.0/instances/{name}", None),
                ):
                    status, answer = unix_request(self.socket_path, method, path, body)
                    operation = answer.get("operation") if status == 202 else None
                    if operation:
                        unix_request(
                            self.socket_path, "GET", f"{operation}/wait?timeout=30", None, 40
                        )
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"throwaway incusd: could not stop its instances: {exc}", file=sys.stderr)

    def __enter__(self) -> ThrowawayIncusd:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def make_client_certificate(directory: str | Path, name: str = "client") -> tuple[str, str]:
    """A fresh self-signed client certificate and key (PEM), made with openssl."""
    if shutil.which("openssl") is None:
        raise DaemonUnavailable("openssl is needed to make a client certificate")
    cert = os.path.join(directory, f"{name}.crt")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp384r1",
            "-sha384",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            f"/CN={name}",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


HELP = """\
Start a private incusd in a fresh directory under /tmp, run one command against it, then stop
the daemon (SIGTERM to its own PID, never by name) and remove the directory. The command finds
the daemon through INCUS_SOCKET and INCUS_DIR, as the SDK and the incus CLI do; its exit status
is this script's. Nothing listens beyond the daemon's unix socket.
"""

HELP_EPILOG = f"""\
needs root and incusd ({DEFAULT_INCUSD}; another one with INCUSD=PATH;
scripts/install-incus.sh installs it). When {REFUSE_TO_START} is set, no daemon starts.

examples:
  python3 scripts/throwaway_incusd.py run -- incus image list
  python3 scripts/throwaway_incusd.py run -- python3 scripts/demo.py
"""


def run_parser(
    description: str, epilog: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line of a throwaway script (this one, throwaway_cluster.py): one verb,
    ``run [OPTIONS] -- COMMAND``, explained by description and epilog. Returns the parser and
    the ``run`` subparser, for options of its own."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", required=True, title="verbs")
    run = sub.add_parser(
        "run",
        help="start, run COMMAND against it, stop",
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser, run


def command_to_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The COMMAND after ``run`` (and an optional ``--``); an error if there is none."""
    command: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("run needs a command, e.g. run -- incus image list")
    return command


def main(argv: list[str] | None = None) -> int:
    parser, _ = run_parser(HELP, HELP_EPILOG)
    args = parser.parse_args(argv)
    command = command_to_run(parser, args)
    with ThrowawayIncusd() as daemon:
        print(f"throwaway incusd (pid {daemon.pid}) at {daemon.socket_path}", file=sys.stderr)
        env = dict(os.environ, INCUS_SOCKET=daemon.socket_path, INCUS_DIR=str(daemon.directory))
        return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
