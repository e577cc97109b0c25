"""Fault injection: cut, stall, interrupt and kill under the SDK's calls, and count what is left.

``python -m tests.faults --help`` runs it long (``__main__``); ``tests/test_faults.py`` runs it
short under pytest.

A loopback proxy (``proxy.FaultProxy``) sits in front of a throwaway daemon's HTTPS port (TLS
passes through it untouched) or its unix socket, and strikes once per trial at a seeded random
byte offset in one direction: it closes the connection, resets it, stalls it, or has the call
interrupted (Ctrl-C in the blocking client, task cancellation in the async one). A second daemon
is killed (SIGKILL, by the PID of the process this package started) in the middle of uploads
and exports, and restarted on the same directory to count what it kept.

The rooms:

    fault.py      what strikes (Fault) and what a trial moved (Traffic)
    proxy.py      the loopback proxy
    daemon.py     the daemon that is killed and restarted
    site.py       one daemon, its injectors, its state read behind the SDK's back
    flavours.py   a call in either flavour, and its interruption
    trials.py     the calls under trial and the promises each is checked against
    harness.py    the seeded plan, calibration, and running a trial
    report.py     the figures
    __main__.py   the command line (the long run)

Only loopback addresses and unix sockets are used; the daemons are
private to the run (``throwaway_incusd``), stopped by PID, and their directories removed.
"""

import sys
from pathlib import Path

# The tools this package stands on (throwaway_incusd, tiny_image) live in scripts/, which
# pytest puts on the path (pyproject's pythonpath); ``python -m tests.faults`` needs it too.
_SCRIPTS = str(Path(__file__).resolve().parents[2] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)
