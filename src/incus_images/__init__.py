"""incus_images: manage Incus images from Python, blocking or async.

    from incus_images import Client

    with Client() as client:                      # the local daemon
        for image in client.images.list():
            print(image.fingerprint[:12], image.properties.get("description", ""))

The async twin has the same methods: ``async with AsyncClient() as client: await ...``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The exceptions cost nothing to import (the standard library only), so they are here at once.
from ._errors import (
    AmbiguousFingerprintError,
    APIError,
    ChecksumMismatchError,
    ConflictError,
    ForbiddenError,
    ImageExistsError,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    NotFoundError,
    OperationError,
    OperationGoneError,
    PreconditionFailedError,
    TransferError,
)
from ._version import __version__

if TYPE_CHECKING:
    from ._async.client import AsyncClient
    from ._async.images import AsyncImagesAPI
    from ._async.operations import AsyncOperationsAPI
    from ._models import (
        Image,
        ImageAlias,
        ImageSource,
        Operation,
        OperationStatus,
        ServerEnvironment,
        ServerInfo,
    )
    from ._remotes import Remote, RemoteConfig, add_remote, load_remotes
    from ._simplestreams import SimpleStreams
    from ._sync.client import Client
    from ._sync.images import ImagesAPI
    from ._sync.operations import OperationsAPI

#: Where the other public names live. They are imported on first use (PEP 562): their modules
#: pull in httpx, attrs and cattrs, and a blocking client needs none of the async flavour's
#: modules, nor an async one the blocking flavour's, nor a list the remotes' configuration.
#: ``import incus_images`` alone then costs little more than Python's start.
_LAZY_NAMES = {
    "AsyncClient": "._async.client",
    "AsyncImagesAPI": "._async.images",
    "AsyncOperationsAPI": "._async.operations",
    "Client": "._sync.client",
    "ImagesAPI": "._sync.images",
    "OperationsAPI": "._sync.operations",
    "Image": "._models",
    "ImageAlias": "._models",
    "ImageSource": "._models",
    "Operation": "._models",
    "OperationStatus": "._models",
    "ServerEnvironment": "._models",
    "ServerInfo": "._models",
    "Remote": "._remotes",
    "RemoteConfig": "._remotes",
    "add_remote": "._remotes",
    "load_remotes": "._remotes",
    "SimpleStreams": "._simplestreams",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "APIError",
    "AmbiguousFingerprintError",
    "AsyncClient",
    "AsyncImagesAPI",
    "AsyncOperationsAPI",
    "ChecksumMismatchError",
    "Client",
    "ConflictError",
    "ForbiddenError",
    "Image",
    "ImageAlias",
    "ImageExistsError",
    "ImageSource",
    "ImagesAPI",
    "IncusConnectionError",
    "IncusError",
    "IncusTimeoutError",
    "InvalidInputError",
    "NotFoundError",
    "Operation",
    "OperationError",
    "OperationGoneError",
    "OperationStatus",
    "OperationsAPI",
    "PreconditionFailedError",
    "Remote",
    "RemoteConfig",
    "ServerEnvironment",
    "ServerInfo",
    "SimpleStreams",
    "TransferError",
    "__version__",
    "add_remote",
    "load_remotes",
]
