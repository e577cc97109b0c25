"""incus_images: manage Incus images from Python, blocking or async.

    from incus_images import Client

    with Client() as client:                      # the local daemon
        for image in client.images.list():
            print(image.fingerprint[:12], image.properties.get("description", ""))

The async twin has the same methods: ``async with AsyncClient() as client: await ...``.
"""

from ._async.client import AsyncClient
from ._async.images import AsyncImagesAPI
from ._async.operations import AsyncOperationsAPI
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
from ._models import (
    Image,
    ImageAlias,
    ImageAliasList,
    ImageList,
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
from ._version import __version__

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
    "ImageAliasList",
    "ImageExistsError",
    "ImageList",
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
