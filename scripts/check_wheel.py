"""Fail unless the built wheel and sdist hold the generated ``_sync`` package.

    python scripts/check_wheel.py DIST_DIR

``_sync/`` is not in git; only the build hook puts it into distributions. A wheel without it
would install a package whose ``import incus_images`` fails. Each generated module in the wheel
must also be the one the build generated in this checkout (byte for byte), which is the code
``nox -s lint`` and ``nox -s typecheck`` check: what ships is what was checked.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = sorted(p.name for p in (ROOT / "src" / "incus_images" / "_async").glob("*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/check_wheel.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("dist", metavar="DIST_DIR", help="where python -m build wrote them")
    dist = Path(parser.parse_args(argv).dist)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        print(
            f"expected one wheel and one sdist in {dist}, found {wheels + sdists}", file=sys.stderr
        )
        return 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel_names = set(wheel.namelist())
        shipped = {
            name: wheel.read(name)
            for name in wheel_names
            if name.startswith("incus_images/_sync/") and name.endswith(".py")
        }
    with tarfile.open(sdists[0]) as sdist:
        sdist_names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    problems = []
    for module in REQUIRED:
        name = f"incus_images/_sync/{module}"
        if name not in wheel_names:
            problems.append(f"wheel {wheels[0].name} lacks {name}")
        elif shipped[name] != (ROOT / "src" / name).read_bytes():
            problems.append(f"wheel {wheels[0].name}: {name} is not the checkout's generated one")
        if f"src/incus_images/_sync/{module}" not in sdist_names:
            problems.append(f"sdist {sdists[0].name} lacks src/incus_images/_sync/{module}")
    if "incus_images/py.typed" not in wheel_names:
        problems.append("wheel lacks incus_images/py.typed")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{wheels[0].name} and {sdists[0].name} hold the {len(REQUIRED)} generated _sync modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
