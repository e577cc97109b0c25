"""incus_images: manage Incus images from Python, blocking or async.

    from incus_images import Client

    with Client() as client:                      # the local daemon
        for image in client.images.list():
            print(image.fingerprint[:12], image.properties.get("description", ""))

The async twin has the same methods: ``async with AsyncClient() as client: await ...``.
"""

# attrs imports inspect already: these cost the import nothing.
import inspect as _inspect
import types as _types
import typing as _typing

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


def _present_as_public(namespace: dict[str, object]) -> None:
    """Make the public classes and functions report this package as their module.

    Tracebacks, reprs and pickles then name ``incus_images.NotFoundError``, not the private
    module it is written in (pickle finds it here again: every such name is in __all__).
    Class annotations are resolved first, in their own module: get_type_hints (and so
    cattrs) would otherwise look the names they use up in this package, which has not got
    them (``datetime``, ``Path``, ...). inspect.getsource() finds no source for these classes
    (it looks in this file); help(), pickle, cattrs and the documentation site do not need it.
    """
    for name in __all__:
        public = namespace[name]
        if not isinstance(public, type | _types.FunctionType):
            continue
        module = getattr(public, "__module__", "")
        if not module.startswith(__name__ + "._"):
            continue
        own = _inspect.get_annotations(public) if isinstance(public, type) else {}
        if own:
            hints = _typing.get_type_hints(public, include_extras=True)
            public.__annotations__ = {key: hints[key] for key in own}
        public.__module__ = __name__


_present_as_public(globals())
