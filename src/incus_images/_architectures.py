"""Architecture names as Incus spells them, and this machine's.

A catalogue names architectures as distributions do (``amd64``, ``arm64``, ``armhf``); Incus
stores and lists the kernel's names (``x86_64``, ``aarch64``, ``armv7l``). The table is
incus's own (lxc/incus shared/osarch/architectures.go): a name it does not know makes incus
skip the product, and so does the catalogue reader; the caller's ``architecture=`` is
checked against it too (``_validate.architecture_name``).
"""

from __future__ import annotations

import platform

__all__ = [
    "ARCHITECTURES",
    "INCUS_ARCHITECTURES",
    "architecture_spellings",
    "incus_architecture",
    "local_architecture",
]

#: Every name incus accepts, and the Incus name it stands for.
ARCHITECTURES: dict[str, str] = {
    **dict.fromkeys(["i686", "i386", "i586", "386", "x86", "generic_32"], "i686"),
    **dict.fromkeys(["x86_64", "amd64", "generic_64"], "x86_64"),
    **dict.fromkeys(["armv6l", "armel", "arm"], "armv6l"),
    **dict.fromkeys(
        ["armv7l", "armhf", "armhfp", "armv7a_hardfp", "armv7", "armv7a_vfpv3_hardfp"], "armv7l"
    ),
    "armv8l": "armv8l",
    **dict.fromkeys(["aarch64", "arm64", "arm64_generic"], "aarch64"),
    **dict.fromkeys(["ppc", "powerpc"], "ppc"),
    **dict.fromkeys(["ppc64", "powerpc64"], "ppc64"),
    **dict.fromkeys(["ppc64le", "ppc64el"], "ppc64le"),
    "s390x": "s390x",
    **dict.fromkeys(["mips", "mipsel", "mipsle"], "mips"),
    **dict.fromkeys(["mips64", "mips64el", "mips64le"], "mips64"),
    "riscv32": "riscv32",
    "riscv64": "riscv64",
    **dict.fromkeys(["loongarch64", "loong64"], "loongarch64"),
}

#: The Incus names, sorted (for messages).
INCUS_ARCHITECTURES: tuple[str, ...] = tuple(sorted(set(ARCHITECTURES.values())))


def incus_architecture(name: str) -> str | None:
    """The Incus name of an architecture name incus knows (``amd64`` -> ``x86_64``), else
    None."""
    return ARCHITECTURES.get(name)


def local_architecture() -> str:
    """This machine's architecture, by its Incus name (incus takes the kernel's ``uname -m``
    as it is; a name the table knows is mapped, so that ``arm64`` on other systems counts as
    ``aarch64``)."""
    machine = platform.machine()
    return ARCHITECTURES.get(machine, machine)


def architecture_spellings(name: str) -> list[str]:
    """The names that stand for the architecture ``name`` (one the table knows), ``name``
    first, then the others in the order of the table."""
    incus = ARCHITECTURES[name]
    return [
        name,
        *(other for other, same in ARCHITECTURES.items() if same == incus and other != name),
    ]
