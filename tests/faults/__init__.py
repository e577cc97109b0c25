"""Fault injection: cut, stall, interrupt and kill under the SDK's calls, and count what is left.

``python -m tests.faults --help`` runs it long (``__main__``); ``tests/test_faults.py`` runs it
short under pytest.

Each trial strikes once at a seeded random byte offset in one direction of one call: it closes
the connection, resets it, stalls it, or has the call interrupted (Ctrl-C in the blocking
client, task cancellation in the async one). A second daemon is killed (SIGKILL, by the PID of
the process this package started) in the middle of uploads and exports, and restarted on the
same directory to count what it kept.

Two injectors strike (``trials.injector_for`` chooses; a trial's line says which):

* In process (``inprocess.py``), where the fault is in HTTP bytes that all pass through httpx:
  cuts, resets and cancellations at a byte offset on the unix socket, under create (bytes,
  path, split), waits and list. The SDK is given ``transport=`` a transport that wraps httpx's
  own on the daemon's socket and raises what httpx raises for a closed or reset connection.
* The loopback proxy (``proxy.py``), a thread that forwards real sockets, everywhere else:
  - HTTPS: its offsets fall in TLS records, handshakes included, which only a socket carries;
  - copy-pull: the target daemon pulls from the source's HTTPS address, through the proxy
    (a transport of the SDK's would not see the daemon's own download);
  - exports and relays on the unix socket: the SDK reads a unified export's body straight from
    the connection's socket, beneath any transport (the fast path the proxy still exercises);
  - stalls: they test the deadlines the SDK's own network backend keeps in every read and
    write, which a user's transport replaces (a documented limit of ``transport=``);
  - timed resets: they strike from outside while a long-poll waits in a read;
  - daemon kills: the kill comes from another thread whatever the client is doing (blocked in
    a read or a write, say), as a daemon's death does; in process it would come only between
    the client's own reads and writes;
  - interruptions from the progress callback, which need no injector: their calls keep the
    SDK's own connection pool.

The rooms:

    fault.py      what strikes (Fault) and what a trial moved (Traffic)
    proxy.py      the loopback proxy
    inprocess.py  the fault transport, in process
    daemon.py     the daemon that is killed and restarted
    site.py       one daemon, its injectors, its state read behind the SDK's back
    flavours.py   a call in either flavour, and its interruption
    trials.py     the calls under trial and the promises each is checked against
    harness.py    the seeded plan, calibration, and running a trial
    report.py     the figures
    __main__.py   the command line (the long run)

Only loopback addresses and unix sockets are used; the daemons are private to the run
(``throwaway_incusd``), stopped by PID, and their directories removed.
"""
