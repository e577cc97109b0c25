"""Fault injection under the SDK's calls: the long run, and replays of single trials.

    python -m tests.faults --trials 300 --kills 16    # the long run; prints the figures
    python -m tests.faults --seed 1010 --only 17      # replay trial 17 of that seed, verbosely
    python -m tests.faults --ops export-file,list --mid-transfer   # a plan as the CI test has

Run from the repository's root (as root: it starts throwaway incusd daemons, stopped by PID
when done). Each trial cuts, resets, stalls or interrupts one call at a seeded byte offset, or
kills the daemon under it, and checks what is left: a typed error or success, no partial or
temporary file, no image stored without the error saying so. The exit status is 1 when a
promise was broken (each is listed with the command that replays its trial), 3 when no
daemon can be started.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from throwaway_incusd import DaemonUnavailable, make_client_certificate

from .daemon import FaultDaemon
from .harness import DEFAULT_SEED, Harness
from .report import report
from .site import KILL_PAYLOAD, PAYLOAD, Site
from .trials import OPS


@contextlib.contextmanager
def daemons(kills: bool) -> Iterator[tuple[Site, Site | None, Path]]:
    """A daemon over HTTPS trusting a fresh client certificate (and a second one to kill),
    each with its proxies; everything is stopped and removed afterwards."""
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="faults-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        certificate = make_client_certificate(workdir, "faults")
        sites: list[Site] = []
        for _ in range(2 if kills else 1):
            daemon = FaultDaemon()
            stack.callback(daemon.stop)
            daemon.start()
            daemon.enable_https()
            daemon.trust(certificate[0])
            site = Site(daemon, certificate, payload=KILL_PAYLOAD if sites else PAYLOAD)
            stack.callback(site.close)
            sites.append(site)
        trials = workdir / "trials"
        trials.mkdir()
        yield sites[0], sites[1] if kills else None, trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--trials", type=int, default=300, help="trials that cut, stall or interrupt a call"
    )
    parser.add_argument("--kills", type=int, default=16, help="trials that kill the daemon")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--only", type=int, help="run only this trial of the seed (replay)")
    parser.add_argument("--only-kill", type=int, help="run only this kill trial of the seed")
    parser.add_argument(
        "--ops", help=f"the calls to take in turn, comma-separated (default: {','.join(OPS)})"
    )
    parser.add_argument(
        "--mid-transfer",
        action="store_true",
        help="strike only in the middle of bodies (as the CI test does; see Harness)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every trial")
    args = parser.parse_args(argv)
    ops = tuple(args.ops.split(",")) if args.ops else OPS
    if not set(ops) <= set(OPS):
        parser.error(f"--ops: unknown calls {sorted(set(ops) - set(OPS))}")
    replay = args.only is not None or args.only_kill is not None
    verbose = args.verbose or replay
    print(f"seed {args.seed}", flush=True)
    started = time.monotonic()
    try:
        kills = args.only_kill is not None or (args.only is None and args.kills > 0)
        with daemons(kills=kills) as (site, kill_site, work):
            harness = Harness(
                site,
                work,
                seed=args.seed,
                kill_site=kill_site,
                ops=ops,
                mid_transfer=args.mid_transfer,
                log=(lambda line: print(line, flush=True)) if verbose else None,
            )
            if args.only is not None:
                harness.run_trial(args.only)
                harness.sweep()
            elif args.only_kill is not None:
                harness.run_kill(args.only_kill)
                harness.sweep()
            else:
                harness.run(args.trials, args.kills)
            print(report(harness, time.monotonic() - started))
            return 1 if harness.broken else 0
    except DaemonUnavailable as exc:
        print(f"no throwaway incusd: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
