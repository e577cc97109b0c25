"""Typed results: attrs models of the Incus objects. Field names are the Incus JSON keys.

``class`` is a Python keyword, so :attr:`Operation.class_` stands for the JSON key ``class``.
Timestamps are timezone-aware datetimes; Incus's zero time (``0001-01-01T00:00:00Z``, meaning
never or unset) becomes None.

Jupyter and IPython show Image, ImageAlias, Operation and the lists of images and aliases as
small tables (see ``_display``, which draws them).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Self, SupportsIndex, TypeVar, overload

import attrs

from ._display import (
    alias_card,
    aliases_table,
    displayed,
    image_card,
    images_table,
    operation_card,
)

__all__ = [
    "Image",
    "ImageAlias",
    "ImageAliasList",
    "ImageList",
    "ImageSource",
    "Operation",
    "OperationStatus",
    "ServerEnvironment",
    "ServerInfo",
]


class OperationStatus(enum.IntEnum):
    """Incus operation status codes. A status is final from 200 on."""

    RUNNING = 103
    CANCELLING = 104
    PENDING = 105
    SUCCESS = 200
    FAILURE = 400
    CANCELLED = 401


@displayed(alias_card)
@attrs.frozen(kw_only=True)
class ImageAlias:
    """An image alias: a name that points at an image.

    Inside :attr:`Image.aliases` the server sends only ``name`` and ``description``; the SDK
    fills ``target`` and ``type`` from the image they belong to.
    """

    name: str
    target: str = ""
    description: str = ""
    #: ``container`` or ``virtual-machine``: the type of the target image.
    type: str = ""


@attrs.frozen(kw_only=True)
class ImageSource:
    """Where an image was downloaded from (set only for images with a remote source)."""

    alias: str = ""
    certificate: str = ""
    protocol: str = ""
    server: str = ""
    image_type: str = ""


@displayed(image_card)
@attrs.frozen(kw_only=True)
class Image:
    """An image stored on the server. Shown as a small table in Jupyter and IPython."""

    #: The SHA-256 of the image's bytes (metadata followed by rootfs for split images), 64 hex.
    fingerprint: str
    filename: str = ""
    #: Size in bytes (both parts together for split images).
    size: int = 0
    architecture: str = ""
    #: ``container`` or ``virtual-machine``.
    type: str = ""
    public: bool = False
    auto_update: bool = False
    properties: dict[str, str] = attrs.field(factory=dict)
    aliases: list[ImageAlias] = attrs.field(factory=list)
    profiles: list[str] = attrs.field(factory=list)
    created_at: datetime | None = None
    uploaded_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    cached: bool = False
    update_source: ImageSource | None = None
    project: str = ""


@displayed(operation_card)
@attrs.frozen(kw_only=True)
class Operation:
    """A background task on the server (an upload, a deletion, ...), in the state last read."""

    id: str
    #: ``task``, ``token`` or ``websocket`` (the JSON key is ``class``).
    class_: str = ""
    description: str = ""
    status: str = ""
    #: See :class:`OperationStatus`; final from 200 on.
    status_code: int = 0
    metadata: dict[str, Any] | None = None
    resources: dict[str, list[str]] = attrs.field(factory=dict)
    #: The server's error message when the operation failed.
    err: str = ""
    may_cancel: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    location: str = ""

    @property
    def done(self) -> bool:
        """Whether the operation has reached a final status."""
        return self.status_code >= OperationStatus.SUCCESS

    @property
    def succeeded(self) -> bool:
        """Whether the operation finished successfully."""
        return self.status_code == OperationStatus.SUCCESS


T = TypeVar("T")


class _ModelList(list[T]):
    """A list of models that Jupyter and IPython show as one table, a row per item. It is a
    plain list otherwise (equal to a list with the same items, JSON-encodable and picklable as
    one); a slice is of the same type, so ``images[:5]`` is a table too."""

    __slots__ = ()

    @overload
    def __getitem__(self, index: SupportsIndex) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Self: ...

    def __getitem__(self, index: SupportsIndex | slice) -> T | Self:
        if isinstance(index, slice):
            return type(self)(super().__getitem__(index))
        return super().__getitem__(index)


@displayed(images_table, items=Image)
class ImageList(_ModelList[Image]):
    """What ``images.list()`` returns: a ``list`` of Image shown as a table of images."""

    __slots__ = ()


@displayed(aliases_table, items=ImageAlias)
class ImageAliasList(_ModelList[ImageAlias]):
    """What ``images.list_aliases()`` returns: a ``list`` of ImageAlias shown as a table."""

    __slots__ = ()


@attrs.frozen(kw_only=True)
class ServerEnvironment:
    """What a server says about itself to a trusted client (part of ``GET /1.0``)."""

    #: The addresses it serves its API on (``host:port``).
    addresses: list[str] = attrs.field(factory=list)
    #: Its server certificate (PEM).
    certificate: str = ""
    certificate_fingerprint: str = ""
    server_name: str = ""
    server_version: str = ""
    server_clustered: bool = False
    project: str = ""
    #: The architectures it runs instances of (Incus names), its own first.
    architectures: list[str] = attrs.field(factory=list)


@attrs.frozen(kw_only=True)
class ServerInfo:
    """The server's answer to ``GET /1.0``: its API, and what it thinks of this client."""

    #: ``trusted`` or ``untrusted``.
    auth: str = ""
    api_version: str = ""
    api_status: str = ""
    api_extensions: list[str] = attrs.field(factory=list)
    auth_methods: list[str] = attrs.field(factory=list)
    #: Only for a trusted client.
    environment: ServerEnvironment | None = None

    @property
    def trusted(self) -> bool:
        """Whether the server trusts this client. An untrusted client sees only public
        images (of the default project) and cannot change anything."""
        return self.auth == "trusted"
