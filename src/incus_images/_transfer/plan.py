"""The plan of an upload's body: what create() checked and decided before sending anything.

A unified image goes as the raw body; a split image as ``multipart/form-data`` with the parts
``metadata`` and ``rootfs`` (``rootfs.img`` for a virtual machine), in that order. When every
size is known the body carries a Content-Length; only then does incusd read it at full speed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import attrs

from .._errors import InvalidInputError
from .._requests import AliasEntry, FollowUp, ImagePatch
from .._validate import (
    IMAGE_TYPES,
    boolean,
    callback,
    filename_header,
    full_fingerprint,
    names_list,
    new_alias_name,
    profile_name,
    properties_map,
)
from .multipart import closing_delimiter, part_header
from .reports import ProgressCallback
from .sources import Source, open_source, refuse_json_before_sending

if TYPE_CHECKING:
    from .._build.build import ImageBuild


def list_header(key: str, values: Sequence[str]) -> str:
    """X-Incus-aliases / X-Incus-profiles: URL-encoded ``key=a&key=b``."""
    return urlencode([(key, value) for value in values])


def _usable(name: str | None) -> str | None:
    """A source's own file name, if it can go into a header as it is."""
    if name is None:
        return None
    try:
        filename_header(name)
    except InvalidInputError:
        return None
    return name


@attrs.frozen
class Segment:
    """A piece of the body: fixed framing bytes, or a source (named for error messages)."""

    framing: bytes = b""
    source: Source | None = None
    argument: str = ""


class UploadPlan:
    """The headers and the body layout of one upload."""

    def __init__(
        self,
        image: Source,
        rootfs: Source | None,
        *,
        image_type: str | None,
        filename: str | None,
    ) -> None:
        self.sources = [image] if rootfs is None else [image, rootfs]
        self.headers: dict[str, str | bytes] = {}
        self.segments: list[Segment] = []
        if rootfs is None:
            if image_type is not None:
                raise InvalidInputError(
                    "type= applies to split images (metadata plus rootfs=); a unified "
                    "image's type comes from its tarball"
                )
            self.headers["Content-Type"] = "application/octet-stream"
            name = filename if filename is not None else _usable(image.name)
            if name is not None:
                self.headers["X-Incus-filename"] = filename_header(name)
            self.segments.append(Segment(source=image, argument="image_data"))
        else:
            image_type = "container" if image_type is None else image_type
            if image_type not in IMAGE_TYPES:
                raise InvalidInputError(
                    f"type must be 'container' or 'virtual-machine', got {image_type!r}"
                )
            # Incus takes the image's file name from the rootfs part (and ignores the header).
            rootfs_name = filename if filename is not None else _usable(rootfs.name) or "rootfs"
            filename_header(rootfs_name)  # the same checks as for a header value
            boundary = secrets.token_hex(16)
            self.headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            rootfs_part = "rootfs.img" if image_type == "virtual-machine" else "rootfs"
            self.segments += [
                Segment(
                    framing=part_header(
                        boundary, "metadata", _usable(image.name) or "metadata", first=True
                    )
                ),
                Segment(source=image, argument="image_data"),
                Segment(framing=part_header(boundary, rootfs_part, rootfs_name, first=False)),
                Segment(source=rootfs, argument="rootfs"),
                Segment(framing=closing_delimiter(boundary)),
            ]
        sizes = [source.size for source in self.sources]
        #: Image bytes to send (framing not counted), when every size is known.
        self.data_size: int | None = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
        if self.data_size is not None:
            framing = sum(len(segment.framing) for segment in self.segments)
            self.headers["Content-Length"] = str(self.data_size + framing)
        self.multipart = rootfs is not None
        #: How messages name the image before its fingerprint is known.
        self.description = " + ".join(
            f"'{source.name}'"
            if source.name
            else f"of {source.size} bytes"
            if source.size is not None
            else f"from an {source.kind.replace('_', ' ')}"
            for source in self.sources
        )


def build_parts(
    build: ImageBuild, rootfs: object, image_type: str | None
) -> tuple[object, str | None]:
    """(rootfs, type) of an upload of an ImageBuild: a VM build's disk is its rootfs part; a
    metadata_only build needs ``rootfs=``; a unified build takes neither."""
    if build.kind == "metadata":
        if rootfs is None:
            raise InvalidInputError(
                "rootfs is required with an ImageBuild.metadata_only() build (it is the "
                "metadata tarball of a split image)"
            )
        return rootfs, image_type
    if rootfs is not None:
        maker = "virtual_machine" if build.kind == "virtual-machine" else "from_directory"
        raise InvalidInputError(
            f"rootfs cannot be given with an ImageBuild.{maker}() build"
            + (
                ": it supplies its disk itself"
                if build.kind == "virtual-machine"
                else ": it is a unified image, its root file system is inside"
            )
        )
    if build.kind == "virtual-machine":
        if image_type not in (None, "virtual-machine"):
            raise InvalidInputError(
                f"type {image_type!r:.40} does not fit an ImageBuild.virtual_machine() build"
            )
        return build.disk, "virtual-machine"
    return None, image_type


@attrs.frozen
class PreparedUpload:
    """Everything create() checked and decided before sending anything."""

    plan: UploadPlan
    headers: dict[str, str | bytes]
    #: Checked beforehand: the aliases must be free, the profiles must exist.
    aliases: list[str]
    profiles: list[str]
    #: What is applied once the image is stored (so the call waits for the upload).
    follow_up: FollowUp
    progress: ProgressCallback | None


def prepare_upload(
    image_data: object,
    rootfs: object,
    *,
    filename: str | None,
    public: bool,
    auto_update: bool,
    properties: object,
    wait: bool,
    image_type: str | None,
    aliases: object,
    profiles: object,
    fingerprint: object,
    progress: object,
    accept_async: bool,
) -> PreparedUpload:
    """Check every argument of create() and work out the request; nothing is sent."""
    image = open_source(image_data, "image_data", accept_async=accept_async)
    if image.kind == "build":
        rootfs, image_type = build_parts(image.value, rootfs, image_type)
    rootfs_source = (
        None if rootfs is None else open_source(rootfs, "rootfs", accept_async=accept_async)
    )
    plan = UploadPlan(image, rootfs_source, image_type=image_type, filename=filename)
    if rootfs_source is None:
        refuse_json_before_sending(image)
    headers = dict(plan.headers)
    if boolean(public, "public"):
        headers["X-Incus-public"] = "true"
    # Incus ignores auto_update on uploads, and its properties header crashes incusd 6.0.4
    # when metadata.yaml has no properties map: both are applied after the upload.
    wanted_properties = properties_map(properties)
    patch = ImagePatch(
        auto_update=True if boolean(auto_update, "auto_update") else None,
        properties=wanted_properties or None,
    )
    boolean(wait, "wait")
    alias_names = names_list(aliases, "aliases", new_alias_name)
    profile_names = names_list(profiles, "profiles", profile_name)
    if profile_names:
        headers["X-Incus-profiles"] = list_header("profile", profile_names)
    if fingerprint is not None:
        headers["X-Incus-fingerprint"] = full_fingerprint(fingerprint)
    callback(progress, "progress")
    return PreparedUpload(
        plan=plan,
        headers=headers,
        aliases=alias_names,
        profiles=profile_names,
        follow_up=FollowUp(
            patch=patch if patch != ImagePatch() else None,
            # The profiles header cannot say "none": empty means the default profile.
            profiles=[] if profiles is not None and not profile_names else None,
            aliases=[AliasEntry(name=name) for name in alias_names],
        ),
        progress=progress,  # type: ignore[arg-type]  # checked by callback() above
    )
