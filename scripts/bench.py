"""Benchmark big transfers: the SDK (sync and async) against the incus CLI, curl and httpx.

    python scripts/bench.py [--sizes 1,4] [--rounds 3] [--workdir DIR]
                            [--only upload|export|copy|startup|catalogue|build|events]
                            [--variants A,B,...] [--startup-rounds 30] [--catalogue-images 5000]
                            [--catalogue-export 1] [--build-size 1] [--build-small-files 50000]
                            [--events-changes 50]

Starts a throwaway incusd, writes incompressible unified images (a plain tar holding random
bytes) of the given sizes (GiB, fractions allowed, or MiB with an M suffix: --sizes 64M for a
smoke run), and times each variant in a process of its own, interleaved (A B C D, A B C D, ...
with the order rotated every round). Peak RSS comes from GNU time for each child. Prints
medians and the median of per-round ratios, and checks the targets:

* upload and export: the SDK at most 1.0x the incus CLI's time;
* upload at most 1.10x and export at most 1.25x the curl floor;
* the SDK's peak RSS under 64 MiB, and within 8 MiB between the smallest and largest image.

The copy part (scripts/bench_copy.py; two more throwaway daemons on loopback HTTPS) times
images.copy() in pull, push and relay mode against `incus image copy`, and checks issue 6's
targets: pull at most 1.05x and relay at most 1.30x the CLI's pull, the relay's peak RSS as
above, and a finished pull seen by the SDK within 50 ms of the daemon finishing it.

The start-up part (scripts/bench_startup.py; a throwaway daemon holding 200 tiny images) times
fresh processes that import the SDK or list the images, against httpx and the incus CLI, and
the client CPU of images.get(), and checks issue 9's targets: ``import incus_images`` and
``from incus_images import Client`` at most 1.15x ``import httpx``; start + list of 200 images
at most 1.05x plain httpx and 1.35x ``incus image list``; get() at most 1.2x (sync) and 1.5x
(async) plain httpx's CPU per call.

The catalogue part (scripts/bench_catalogue.py; the project's own simplestreams server on
loopback HTTPS, no daemon) times a cold ``images.list()`` of a catalogue of 5,000 images against
a cold ``incus image list NAME: --format json``, and a 1 GiB ``images.export()`` from it against
curl then sha256sum, and checks issue 16's targets: list at most 1.25x the CLI with a peak RSS
under 200 MiB, export at most 1.1x curl + sha256sum.

The build part (scripts/bench_build.py; a throwaway daemon of its own) streams a tree of 1 GiB
(four large files of random bytes and 50,000 small ones) into the daemon with
``images.create(ImageBuild.from_directory(ROOT))``, against ``tar -czf`` into a file and
``incus image import`` of it, and checks issue 17's targets: at most 1.0x the tar and import, a
peak RSS under 64 MiB, and no temporary file in the working directory or TMPDIR.

The events part (scripts/bench_events.py; a throwaway daemon of its own) measures how soon an
alias creation is heard on the event stream, from its request being sent to its event arriving:
``images.watch()`` in both flavours against a raw wsproto listener and ``incus monitor``. It
prints the median, 90th percentile and worst latency; it has no timing target, only that every
listener heard every change, in order.

Needs root, incusd, the incus CLI and curl (scripts/install-incus.sh installs the first two),
and the SDK importable by the Python running this script.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import (
    GIB,
    GNU_TIME,
    HERE,
    MIB,
    RSS_LIMIT_MIB,
    Run,
    compare,
    interleave,
    make_image,
    run_child,
    size_text,
)
from throwaway_incusd import ThrowawayIncusd, incusd_binary, unix_request

UPLOAD_VARIANTS = ["sdk-sync", "sdk-async", "incus-cli", "curl", "httpx"]
EXPORT_VARIANTS = ["sdk-sync", "sdk-async", "incus-cli", "curl", "httpx"]
TARGETS = {  # (reference, highest allowed ratio of the SDK's time to the reference's)
    "upload": [("incus-cli", 1.00), ("curl", 1.10)],
    "export": [("incus-cli", 1.00), ("curl", 1.25)],
}
RSS_SPREAD_MIB = 8


def parse_size(text: str) -> int:
    """A size from the command line: GiB ("1", "0.5"), or MiB with a suffix ("64M", "64MiB")."""
    value = text.strip().lower()
    for suffix, unit in (("mib", MIB), ("m", MIB), ("gib", GIB), ("g", GIB)):
        if value.endswith(suffix):
            return int(float(value.removesuffix(suffix)) * unit)
    return int(float(value) * GIB)


def write_bytecode(python: str, env: dict[str, str]) -> None:
    """Write the bytecode of the SDK and of the packages installed beside it, as pip does when
    it installs them.

    These machines set PYTHONDONTWRITEBYTECODE: where bytecode was never written (an editable
    SDK; packages installed by uv, which compiles nothing by default) every child compiles
    what it imports from source, and the figures measure the compiler. With httpx, httpcore,
    attrs, cattrs and the SDK compiled in every process, a 1 GiB export took 0.7 s more CPU:
    1.85x the CLI instead of 1.27x (4 rounds in one run).
    """
    where = subprocess.run(
        [
            python, "-c",
            "import incus_images, sysconfig; "
            "print(incus_images.__path__[0]); print(sysconfig.get_paths()['purelib'])",
        ],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.split("\n")  # fmt: skip
    directories = sorted({line for line in where if line})
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", *directories], env=env, check=True)
    print(f"bytecode written for {', '.join(directories)}")


class Bench:
    def __init__(self, daemon: ThrowawayIncusd, workdir: Path) -> None:
        self.daemon = daemon
        self.workdir = workdir
        self.socket = daemon.socket_path
        config = workdir / "incus-cli-config"
        config.mkdir(exist_ok=True)
        # The CLI talks to the throwaway daemon only, with a config of its own.
        self.env = dict(os.environ, INCUS_DIR=str(daemon.directory), INCUS_CONF=str(config))
        self.python = sys.executable

    def delete_image(self, fingerprint: str) -> None:
        status, body = unix_request(self.socket, "DELETE", f"/1.0/images/{fingerprint}")
        if status == 202:
            op = body["metadata"]["id"]
            unix_request(self.socket, "GET", f"/1.0/operations/{op}/wait?timeout=600", timeout=700)

    def fingerprints(self) -> list[str]:
        _, body = unix_request(self.socket, "GET", "/1.0/images")
        return [url.rsplit("/", 1)[1] for url in body["metadata"]]

    def upload(self, variant: str, image: Path) -> Run:
        endpoint = f"unix://{self.socket}"
        if variant.startswith("sdk-") or variant == "httpx":
            flavour = variant.removeprefix("sdk-")
            argv = [self.python, str(HERE / "bench_child.py"), "upload", flavour, endpoint]
            run, _ = run_child([*argv, str(image)], self.env)
            return run
        if variant == "incus-cli":
            run, _ = run_child(["incus", "image", "import", str(image), "--quiet"], self.env)
            return run
        # curl: the upload, then the operation wait: the floor any client can reach.
        curl = ["curl", "-sS", "--fail-with-body", "--unix-socket", self.socket]
        post, out = run_child(
            [
                *curl,
                "-X", "POST", "-H", "Content-Type: application/octet-stream",
                "-T", str(image), "http://incus/1.0/images",
            ],
            self.env,
        )  # fmt: skip
        op_url = json.loads(out)["operation"]
        wait, _ = run_child([*curl, f"http://incus{op_url}/wait?timeout=600"], self.env)
        return Run(
            seconds=post.seconds + wait.seconds,
            peak_rss_mib=max(post.peak_rss_mib, wait.peak_rss_mib),
            cpu=post.cpu + wait.cpu,
        )

    def export(self, variant: str, fingerprint: str) -> Run:
        out_dir = Path(tempfile.mkdtemp(prefix="export-", dir=self.workdir))
        try:
            if variant.startswith("sdk-") or variant == "httpx":
                flavour = variant.removeprefix("sdk-")
                argv = [self.python, str(HERE / "bench_child.py"), "export", flavour]
                target = str(out_dir / "image.tar")
                run, _ = run_child([*argv, f"unix://{self.socket}", fingerprint, target], self.env)
            elif variant == "incus-cli":
                argv = ["incus", "image", "export", fingerprint, str(out_dir / "image"), "--quiet"]
                run, _ = run_child(argv, self.env)
            else:
                url = f"http://incus/1.0/images/{fingerprint}/export"
                argv = ["curl", "-sS", "--fail", "--unix-socket", self.socket, "-o"]
                run, _ = run_child([*argv, str(out_dir / "image.tar"), url], self.env)
            written = sum(f.stat().st_size for f in out_dir.iterdir())
            if written == 0:
                raise RuntimeError(f"{variant} exported nothing")
            return run
        finally:
            shutil.rmtree(out_dir)


def show_run(round_number: int, variant: str, run: Run) -> None:
    print(
        f"  round {round_number}: {variant:10} {run.seconds:7.2f} s  {run.peak_rss_mib:6.1f} MiB",
        flush=True,
    )


def report(
    operation: str, size: int, runs: dict[str, list[Run]], verdicts: list[tuple[str, bool]]
) -> None:
    shown_size = size_text(size)
    print(f"\n{operation} of a {shown_size} image (medians of {len(next(iter(runs.values())))}):")
    print(f"  {'variant':10} {'time s':>8} {'MiB/s':>8} {'peak RSS MiB':>13}")
    for variant, variant_runs in runs.items():
        seconds = statistics.median(r.seconds for r in variant_runs)
        rss = statistics.median(r.peak_rss_mib for r in variant_runs)
        print(f"  {variant:10} {seconds:8.2f} {size / MIB / seconds:8.0f} {rss:13.1f}")
    for sdk in ("sdk-sync", "sdk-async"):
        for reference, limit in TARGETS[operation] + [("httpx", float("inf"))]:
            if sdk not in runs or reference not in runs:
                continue
            shown_limit = None if limit == float("inf") else limit
            verdict = f"{operation} {shown_size} {sdk}/{reference} <= {limit}"
            compare(runs, sdk, reference, shown_limit, verdicts, verdict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1,4",
        help="image sizes in GiB (default 1,4); fractions, or MiB with an M suffix (64M)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where images go (default: a temp dir)")
    parser.add_argument(
        "--only",
        choices=["upload", "export", "copy", "startup", "catalogue", "build", "events"],
        default=None,
        help="run one part only (default: all seven; copy starts two more daemons)",
    )
    parser.add_argument(
        "--events-changes",
        type=int,
        default=50,
        help="alias creations a round in the events part (default 50)",
    )
    parser.add_argument(
        "--build-size",
        default="1",
        help="size of the tree the build part builds: GiB, or MiB with an M suffix (default 1)",
    )
    parser.add_argument(
        "--build-small-files",
        type=int,
        default=50_000,
        help="small files in the build part's tree (default 50000)",
    )
    parser.add_argument(
        "--catalogue-images",
        type=int,
        default=5000,
        help="images in the catalogue the catalogue part lists (default 5000)",
    )
    parser.add_argument(
        "--catalogue-export",
        default="1",
        help="size of the image the catalogue part exports: GiB, or MiB with an M suffix "
        "(default 1)",
    )
    parser.add_argument(
        "--startup-rounds",
        type=int,
        default=30,
        help="rounds of the start-up part's short processes (default 30)",
    )
    parser.add_argument(
        "--variants", default=None, help="comma-separated subset of the variants to run"
    )
    args = parser.parse_args(argv)
    want_copy = args.only in (None, "copy")
    if want_copy:
        import bench_copy  # only when copies are asked for
    if args.variants:
        chosen = args.variants.split(",")
        UPLOAD_VARIANTS[:] = [v for v in UPLOAD_VARIANTS if v in chosen]
        EXPORT_VARIANTS[:] = [v for v in EXPORT_VARIANTS if v in chosen]
        if want_copy:
            bench_copy.COPY_VARIANTS[:] = [v for v in bench_copy.COPY_VARIANTS if v in chosen]
            want_copy = bool(bench_copy.COPY_VARIANTS)
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    catalogue_export = parse_size(args.catalogue_export)
    build_size = parse_size(args.build_size)
    if min(*sizes, catalogue_export, build_size) < MIB:
        sys.exit("bench: sizes below 1 MiB make no sense here")
    # The events part leaves out its incus CLI variant when the CLI is missing.
    for tool in ("incus", "curl", GNU_TIME) if args.only != "events" else ():
        if shutil.which(tool) is None:
            sys.exit(f"bench needs {tool} (Debian packages incus-client, curl, time)")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"load average {_load()}"
    )
    write_bytecode(sys.executable, dict(os.environ))
    workdir = Path(tempfile.mkdtemp(prefix="incus-bench-", dir=args.workdir))
    verdicts: list[tuple[str, bool]] = []
    peak_rss: dict[str, dict[int, float]] = {}
    # The catalogue part needs no daemon; the events part says its daemon's version itself.
    incusd_version = (
        ""
        if args.only in ("catalogue", "events")
        else subprocess.run(
            [incusd_binary(), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    )
    try:
        if args.only in (None, "startup"):
            import bench_startup  # only when start-up is asked for

            # First, and on a daemon of its own: short processes suffer most from the disk
            # writeback that big transfers leave behind.
            with bench_startup.StartupBench(workdir, args.workdir) as startup:
                print(f"incusd {incusd_version} (throwaway for start-up, pid {startup.pid})")
                startup.run(args.startup_rounds, verdicts)
        if args.only in (None, "catalogue"):
            import bench_catalogue  # only when the catalogue is asked for

            # Before the big transfers too: the short list processes suffer from writeback.
            bench_catalogue.CatalogueBench(
                workdir, images=args.catalogue_images, export_size=catalogue_export
            ).run(args.rounds, verdicts)
        if args.only in (None, "build"):
            import bench_build  # only when builds are asked for

            if args.variants:
                chosen = args.variants.split(",")
                bench_build.BUILD_VARIANTS[:] = [
                    v for v in bench_build.BUILD_VARIANTS if v in chosen
                ]
            bench_build.BuildBench(
                workdir, args.workdir, size=build_size, small_files=args.build_small_files
            ).run(args.rounds, verdicts)
        if args.only in (None, "events"):
            import bench_events  # only when events are asked for

            bench_events.run_part(
                workdir,
                args.workdir,
                changes=args.events_changes,
                rounds=args.rounds,
                verdicts=verdicts,
                variants=args.variants.split(",") if args.variants else None,
            )
        with contextlib.ExitStack() as daemons:
            bench: Bench | None = None
            if args.only in (None, "upload", "export"):
                daemon = daemons.enter_context(ThrowawayIncusd(parent_dir=args.workdir))
                print(f"incusd {incusd_version} (throwaway, pid {daemon.pid})")
                bench = Bench(daemon, workdir)
            copier = None
            if want_copy:
                known = () if bench is None else (bench.daemon.pid,)
                copier = daemons.enter_context(
                    bench_copy.CopyBench(workdir, args.workdir, known_pids=known)
                )
                print(
                    f"incusd {incusd_version} (throwaway copy source, pid {copier.source.pid}, "
                    f"and target, pid {copier.target.pid}; HTTPS on loopback)"
                )
            for size in sizes if bench is not None or copier is not None else ():
                image = workdir / f"image-{size // MIB}MiB.tar"
                print(f"\nwriting a {size_text(size)} incompressible image ...", flush=True)
                make_image(image, size)
                if bench is not None:
                    for fingerprint in bench.fingerprints():
                        bench.delete_image(fingerprint)
                if bench is not None and args.only in (None, "upload"):
                    print(f"\nupload, {size_text(size)}:")

                    def measure_upload(variant: str, image: Path = image) -> Run:
                        run = bench.upload(variant, image)
                        for fingerprint in bench.fingerprints():
                            bench.delete_image(fingerprint)
                        return run

                    runs = interleave(UPLOAD_VARIANTS, args.rounds, measure_upload, show_run)
                    report("upload", size, runs, verdicts)
                    for v in ("sdk-sync", "sdk-async"):
                        if v in runs:
                            rss = max(r.peak_rss_mib for r in runs[v])
                            peak_rss.setdefault(f"upload {v}", {})[size] = rss
                if bench is not None and args.only in (None, "export"):
                    run_child(["incus", "image", "import", str(image), "--quiet"], bench.env)
                    (fingerprint,) = bench.fingerprints()
                    print(f"\nexport, {size_text(size)}:")
                    runs = interleave(
                        EXPORT_VARIANTS,
                        args.rounds,
                        lambda variant, fp=fingerprint: bench.export(variant, fp),
                        show_run,
                    )
                    report("export", size, runs, verdicts)
                    for v in ("sdk-sync", "sdk-async"):
                        if v in runs:
                            rss = max(r.peak_rss_mib for r in runs[v])
                            peak_rss.setdefault(f"export {v}", {})[size] = rss
                    bench.delete_image(fingerprint)
                if copier is not None:
                    copier.run(image, size, args.rounds, verdicts, peak_rss)
                image.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    if peak_rss:
        print("\nclient peak RSS (max over rounds), MiB:")
    for name, by_size in peak_rss.items():
        shown = ", ".join(f"{size_text(s)}: {m:.1f}" for s, m in sorted(by_size.items()))
        spread = max(by_size.values()) - min(by_size.values())
        ok = max(by_size.values()) < RSS_LIMIT_MIB and spread <= RSS_SPREAD_MIB
        verdicts.append((f"{name} peak RSS < {RSS_LIMIT_MIB} MiB, spread <= {RSS_SPREAD_MIB}", ok))
        print(f"  {name:18} {shown}; spread {spread:.1f} ({'met' if ok else 'MISSED'})")
    print(f"\nload average after: {_load()}")
    print("\ntargets:")
    for text, ok in verdicts:
        print(f"  {'met   ' if ok else 'MISSED'} {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
