"""Request bodies: attrs models of what the SDK sends, serialized by the one converter.

Field names are the Incus JSON keys (``shared/api/image.go``). A field left at None is not
sent at all, which matters to Incus: a PATCH changes only the keys it carries, and a PUT resets
what it omits (see the models' notes). Values are checked before they get here (``_validate``).
"""

from __future__ import annotations

from datetime import datetime

import attrs

from ._models import Image

__all__ = [
    "AliasEntry",
    "FollowUp",
    "ImageAliasPatch",
    "ImageAliasesEntryPost",
    "ImageAliasesPost",
    "ImageChanges",
    "ImageExportPost",
    "ImagePatch",
    "ImagePut",
    "ImagesPost",
    "ImagesPostSource",
]


@attrs.frozen(kw_only=True)
class AliasEntry:
    """An alias as ``ImagesPost.aliases`` and ``ImageExportPost.aliases`` carry it."""

    name: str
    description: str = ""


@attrs.frozen(kw_only=True)
class ImagePatch:
    """PATCH /1.0/images/{fp}: only the keys given change; a property sent as "" is deleted.

    Incus ignores ``expires_at`` and ``profiles`` in a PATCH: those need :class:`ImagePut`.
    """

    public: bool | None = None
    auto_update: bool | None = None
    properties: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class ImagePut:
    """PUT /1.0/images/{fp}: every writable field. What a PUT omits is reset (properties wiped,
    profiles back to ``["default"]``), so it is always built from what was just read."""

    public: bool
    auto_update: bool
    properties: dict[str, str]
    profiles: list[str]
    #: None keeps the expiry (Incus cannot clear one).
    expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class ImagesPostSource:
    """Where a JSON image request takes the image from."""

    #: ``image`` (from another server), ``instance``, ``snapshot``, ... (None for push tokens).
    type: str | None = None
    #: ``pull`` or ``push``.
    mode: str | None = None
    server: str | None = None
    #: ``incus`` or ``simplestreams``.
    protocol: str | None = None
    fingerprint: str | None = None
    alias: str | None = None
    #: The source server's certificate (PEM), pinned by the daemon that connects to it.
    certificate: str | None = None
    secret: str | None = None
    #: ``container`` or ``virtual-machine``: which image an alias names.
    image_type: str | None = None
    #: The instance or snapshot (``c1/snap0``) to publish.
    name: str | None = None
    project: str | None = None


@attrs.frozen(kw_only=True)
class ImagesPost:
    """POST /1.0/images as JSON: copy from another server, publish an instance, push token."""

    source: ImagesPostSource
    public: bool | None = None
    auto_update: bool | None = None
    properties: dict[str, str] | None = None
    profiles: list[str] | None = None
    aliases: list[AliasEntry] | None = None
    compression_algorithm: str | None = None
    expires_at: datetime | None = None
    filename: str | None = None


@attrs.frozen(kw_only=True)
class ImageExportPost:
    """POST /1.0/images/{fp}/export: the server pushes the image to another server."""

    #: The receiving server's HTTPS URL.
    target: str
    #: The push token's secret, from the receiving server.
    secret: str
    #: The receiving server's certificate (PEM), pinned by the pushing daemon.
    certificate: str | None = None
    project: str | None = None
    aliases: list[AliasEntry] | None = None
    profiles: list[str] | None = None


@attrs.frozen(kw_only=True)
class ImageAliasesPost:
    """POST /1.0/images/aliases."""

    name: str
    target: str
    description: str = ""


@attrs.frozen(kw_only=True)
class ImageAliasesEntryPost:
    """POST /1.0/images/aliases/{name}: rename."""

    name: str


@attrs.frozen(kw_only=True)
class ImageAliasPatch:
    """PATCH /1.0/images/aliases/{name}: only the keys given change."""

    target: str | None = None
    description: str | None = None


# --------------------------------------------------------------------------------------------
# What follows a new image's arrival.


@attrs.frozen(kw_only=True)
class FollowUp:
    """What is applied to a new image once it is stored."""

    #: Fields to PATCH (public, auto_update, properties), or None.
    patch: ImagePatch | None = None
    #: Properties to make exactly these (keys not listed are removed), or None to keep them.
    properties: dict[str, str] | None = None
    #: Profiles to set (only a PUT can, so it sends back what was read), or None to keep them.
    profiles: list[str] | None = None
    aliases: list[AliasEntry] = attrs.field(factory=list)

    @property
    def needed(self) -> bool:
        return bool(
            self.patch is not None
            or self.properties is not None
            or self.profiles is not None
            or self.aliases
        )

    def describe(self) -> str:
        """What is to be applied, for messages ("" when nothing is)."""
        steps = []
        if self.patch is not None:
            steps.append("apply the settings given")
        if self.properties is not None:
            steps.append("set the properties")
        if self.profiles is not None:
            steps.append("set the profiles")
        if self.aliases:
            names = ", ".join(repr(alias.name) for alias in self.aliases[:5])
            more = f" and {len(self.aliases) - 5} more" if len(self.aliases) > 5 else ""
            steps.append(f"create the aliases {names}{more}")
        return ", ".join(steps)


# --------------------------------------------------------------------------------------------
# What update() changes.


@attrs.frozen(kw_only=True)
class ImageChanges:
    """The writable fields update() was given (None: leave the field as it is)."""

    properties: dict[str, str] | None = None
    public: bool | None = None
    auto_update: bool | None = None
    profiles: list[str] | None = None
    expires_at: datetime | None = None

    @property
    def empty(self) -> bool:
        return self == ImageChanges()

    def seen_in(self, image: Image) -> bool:
        """Whether the image carries these changes."""
        wanted = {
            "properties": self.properties,
            "public": self.public,
            "auto_update": self.auto_update,
            "profiles": self.profiles,
            "expires_at": self.expires_at,
        }
        return all(
            value is None or getattr(image, field) == value for field, value in wanted.items()
        )

    def body_for(self, current: Image) -> ImagePatch | ImagePut:
        """The request that makes ``current`` carry these changes and keeps everything else.

        PATCH changes only what it carries, but Incus ignores profiles and expires_at in it;
        those need a PUT, which resets what it omits, so it carries everything as read."""
        properties = self.properties
        if self.profiles is None and self.expires_at is None:
            if properties is not None:
                # PATCH merges properties: a key sent empty is deleted.
                properties = {key: "" for key in current.properties if key not in properties}
                properties.update(self.properties or {})
            return ImagePatch(
                public=self.public, auto_update=self.auto_update, properties=properties
            )
        return ImagePut(
            public=current.public if self.public is None else self.public,
            auto_update=current.auto_update if self.auto_update is None else self.auto_update,
            properties=current.properties if properties is None else properties,
            profiles=current.profiles if self.profiles is None else self.profiles,
            expires_at=self.expires_at,
        )
