"""A throwaway daemon that may be killed mid-call and started again on its directory."""

from __future__ import annotations

import os
import signal
import socket
import time
from urllib.parse import urlsplit

from throwaway_incusd import DaemonUnavailable, ThrowawayIncusd


class FaultDaemon(ThrowawayIncusd):
    """A throwaway incusd that the harness may SIGKILL and start again on the same directory."""

    def kill(self) -> None:
        """SIGKILL this object's own incusd process (never any other)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> float:
        """Start a new incusd on the same INCUS_DIR once the old one is gone; return how long
        it took to answer again (its HTTPS address too, when it has one)."""
        assert self.process is not None
        self.process.wait(30)
        started = time.monotonic()
        self._launch()
        deadline = started + self.start_timeout
        while not self._https_answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise DaemonUnavailable(f"incusd's HTTPS did not come back:\n{self._log_tail()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def _https_answers(self) -> bool:
        if self.https_url is None:
            return True
        address = urlsplit(self.https_url)
        try:
            socket.create_connection((address.hostname, address.port), timeout=1).close()
        except OSError:
            return False
        return True

    def leftovers(self, stored: set[str]) -> list[str]:
        """Files in the daemon's image store that belong to no stored image."""
        assert self.directory is not None
        names = []
        for entry in sorted(os.listdir(self.directory / "images")):
            if entry.split(".")[0] not in stored:
                names.append(entry)
        return names
