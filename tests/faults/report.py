"""The report of a run: trials by call and flavour, outcomes, faults struck, kills, and every
broken promise with the command that replays its trial."""

from __future__ import annotations

import collections
import textwrap
from typing import Any

from .fault import ARROW, DOWN, UP
from .harness import Harness
from .site import IN_PROCESS
from .trials import FLAVOURS, KILL_OPS, OPS, TrialResult


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if column == 0 or column == 1 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _figures(records: list[TrialResult]) -> list[Any]:
    return [
        len(records),
        sum(record.fired for record in records),
        sum(record.outcome == "success" for record in records),
        sum(record.outcome != "success" for record in records),
        *_leftovers(records),
        sum(bool(record.broken) for record in records),
    ]


def _leftovers(records: list[TrialResult]) -> list[int]:
    return [
        sum(len(record.partial_files) for record in records),
        sum(len(record.placed) for record in records),
        sum(len(record.temp_files) for record in records),
        sum(len(record.orphans) for record in records),
        sum(len(record.stored_said_so) for record in records),
    ]


#: The rows of the faults table: the transport, and what struck on it.
INJECTORS = [
    ("https", "https", "proxy"),
    ("unix", "unix", "proxy"),
    ("unix", IN_PROCESS, "in process"),
]
LEFTOVERS = ["files", "placed", "temp", "orphans", "stored+said"]
FIGURES = ["trials", "faults", "ok", "errors", *LEFTOVERS, "broken"]
LEGEND = (
    "faults: trials whose fault struck; files: partial files left under export targets; "
    "placed: complete exports left by a call that failed; temp: .*.partial files left; "
    "orphans: images left by a failed call that did not say so; stored+said: images left "
    "by a failed upload whose error said the image may be stored; broken: trials that broke "
    "a promise"
)


def report(harness: Harness, elapsed: float) -> str:
    main = [record for record in harness.results if not record.spec.label.startswith("kill")]
    kills = [record for record in harness.results if record.spec.label.startswith("kill")]
    out = []
    out.append(
        f"incus_images fault injection: seed {harness.seed}, {len(main)} trials, "
        f"{len(kills)} daemon kills, {len(harness.calibrations)} unfaulted calibration calls, "
        f"{elapsed:.1f} s"
    )
    out.append("")
    rows = []
    for op in OPS:
        for flavour in FLAVOURS:
            group = [r for r in main if r.spec.op == op and r.spec.flavour == flavour]
            if group:
                rows.append([op, flavour, *_figures(group)])
    rows.append(["all", "", *_figures(main)])
    out.append("Trials by call and flavour")
    out.append(_table(["call", "flavour", *FIGURES], rows))
    out.append(textwrap.fill(LEGEND, 100, initial_indent="  ", subsequent_indent="  "))

    out.append("")
    out.append("Outcomes by type")
    outcome_names = sorted({r.outcome for r in main}, key=lambda n: (n != "success", n))
    families = ["create", "export", "wait", "list", "copy"]
    rows = []
    for name in outcome_names:
        counts = [
            sum(r.outcome == name and r.spec.op.startswith(family) for r in main)
            for family in families
        ]
        rows.append([name, "", *counts, sum(counts)])
    out.append(_table(["outcome", "", *families, "all"], rows))

    out.append("")
    out.append("Faults (struck / planned)")
    kinds = ["close", "reset", "stall", "interrupt", "timed"]

    def struck(group: list[TrialResult]) -> list[str]:
        counts = []
        for kind in kinds:
            of_kind = [r for r in group if r.spec.fault.kind == kind]
            counts.append(f"{sum(r.fired for r in of_kind)}/{len(of_kind)}")
        return counts

    rows = [
        [transport, name, *struck([r for r in main if r.spec.injector == injector])]
        for transport, injector, name in INJECTORS
    ]
    for direction in (UP, DOWN):
        group = [r for r in main if r.spec.fault.direction == direction]
        rows.append([ARROW[direction], "", *struck(group)])
    out.append(_table(["", "", *kinds], rows))

    if kills:
        out.append("")
        out.append("Daemon killed mid-call (SIGKILL), restarted on its directory")
        rows = []
        for op in KILL_OPS:
            group = [r for r in kills if r.spec.op == op]
            if not group:
                continue
            outcomes = collections.Counter(r.outcome for r in group)
            rows.append(
                [
                    op,
                    ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())),
                    len(group),
                    sum(r.restarted for r in group),
                    *_leftovers(group),
                    sum(r.image_lost for r in group),
                    sum(len(r.daemon_leftovers) for r in group),
                    sum(bool(r.broken) for r in group),
                ]
            )
        header = [
            "call", "outcomes", "trials", "killed", *LEFTOVERS,
            "image lost", "daemon leftovers", "broken",
        ]  # fmt: skip
        out.append(_table(header, rows))
        leftovers = sorted({name for r in kills for name in r.daemon_leftovers})
        if leftovers:
            out.append(f"  files the restarted daemon kept in images/: {leftovers[:6]}")
        out.append(
            "  image lost: the image an export read was gone after the restart; daemon "
            "leftovers: files in the daemon's images/ that belong to no image"
        )

    broken = harness.broken
    records = harness.calibrations + harness.results
    untyped = sum(any(b.startswith("untyped") for b in r.broken) for r in records)
    files, placed, temp, orphans, said = _leftovers(records)
    out.append("")
    out.append(
        f"In all {len(records)} calls (calibration included): {untyped} untyped errors, "
        f"{files} partial files, {placed} complete exports left by failed calls, {temp} "
        f"temporary files, {orphans} orphan images ({said} stored, and said so)."
    )
    if not broken:
        out.append("Promises: all kept.")
    else:
        out.append(f"BROKEN PROMISES: {len(broken)} trials")
        for record in broken:
            out.append(f"  {record.line()}")
            if record.message:
                out.append(f"      message: {record.message[:400]}")
            command = harness.replay(record)
            if command:
                out.append(f"      replay: {command}")
    return "\n".join(out)
