"""Finding images in a catalogue: by fingerprint, by alias (incusd's rule), and the alias
listing, all from a :class:`.catalogue.Catalogue` in memory."""

from __future__ import annotations

from .._errors import AmbiguousFingerprintError, NotFoundError
from .._models import Image, ImageAlias
from .catalogue import AliasEntry, Catalogue

__all__ = ["alias_list", "image_by_alias", "image_by_fingerprint"]

#: The architectures a machine also runs (incus's personalities, shared/osarch): its alias
#: listing prefers them to the others, after its own.
_PERSONALITIES: dict[str, tuple[str, ...]] = {
    "x86_64": ("i686",),
    "armv7l": ("armv6l",),
    "armv8l": ("armv6l", "armv7l"),
    "aarch64": ("armv6l", "armv7l", "armv8l"),
    "ppc64": ("ppc",),
    "mips64": ("mips",),
}


def image_by_fingerprint(catalogue: Catalogue, prefix: str, *, server: str) -> Image:
    """The image whose fingerprint starts with ``prefix`` (checked, lower case)."""
    matches = [image for image in catalogue.images if image.fingerprint.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(
            f"Could not get image '{prefix}' on {server}: the catalogue has no image with "
            "that fingerprint",
            server=server,
        )
    raise AmbiguousFingerprintError(
        f"Could not get image '{prefix}' on {server}: {len(matches)} images' fingerprints "
        "start with it. Give more of its digits.",
        server=server,
        fingerprint=prefix,
    )


def image_by_alias(
    catalogue: Catalogue,
    name: str,
    *,
    image_type: str | None,
    architecture: str | None,
    server: str,
) -> Image:
    """The image an alias names, by incusd's rule.

    ``image_type`` None prefers a container image, as incusd does (a virtual-machine image
    only when the alias names no container image). ``architecture`` (an Incus name) None means
    this machine's when the alias has an image for it, else the alias's only architecture.
    """
    named = [entry for entry in catalogue.aliases if entry.name == name]
    if image_type is not None:
        candidates = [entry for entry in named if entry.type == image_type]
    else:
        candidates = [entry for entry in named if entry.type == "container"] or named
    by_architecture = {entry.architecture: entry for entry in candidates}
    wanted = architecture
    if wanted is None:
        local = catalogue.local_architecture
        if local in by_architecture or len(by_architecture) != 1:
            wanted = local
        else:
            wanted = next(iter(by_architecture))
    entry = by_architecture.get(wanted)
    if entry is None:
        kind = f"{image_type} " if image_type is not None else ""
        asked = "this machine's architecture, " if architecture is None else ""
        raise NotFoundError(
            f"Could not get the {kind}image of alias {name!r} for {asked}{wanted} on "
            f"{server}: {_what_exists(named)}",
            server=server,
        )
    return image_by_fingerprint(catalogue, entry.target, server=server)


def _what_exists(named: list[AliasEntry]) -> str:
    if not named:
        return "the catalogue has no such alias"
    kinds: dict[str, list[str]] = {}
    for entry in named:
        kinds.setdefault(entry.type, []).append(entry.architecture)
    listed = "; ".join(
        f"{kind} images for {', '.join(sorted(architectures))}"
        for kind, architectures in sorted(kinds.items())
    )
    return f"the alias has {listed} (pass architecture= or type= to choose)"


def alias_list(catalogue: Catalogue) -> list[ImageAlias]:
    """Every alias name once per image type, as incus lists a catalogue's aliases: each names
    the image of this machine's architecture, else of an architecture the machine also runs,
    else of the first architecture listed. Sorted by name, then type."""
    local = catalogue.local_architecture
    also = _PERSONALITIES.get(local, ())

    def preference(entry: AliasEntry) -> int:
        if entry.architecture == local:
            return 0
        return 1 if entry.architecture in also else 2

    chosen: dict[tuple[str, str], AliasEntry] = {}
    for entry in sorted(catalogue.aliases, key=preference):  # stable: first listed first
        chosen.setdefault((entry.name, entry.type), entry)
    return [
        ImageAlias(name=entry.name, target=entry.target, type=entry.type)
        for _, entry in sorted(chosen.items())
    ]
