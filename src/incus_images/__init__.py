"""incus_images: manage Incus images from Python, blocking or async.

    from incus_images import Client

    with Client() as client:                      # the local daemon
        for image in client.images.list():
            print(image.fingerprint[:12], image.properties.get("description", ""))

The async twin has the same methods: ``async with AsyncClient() as client: await ...``.
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types
import typing as _typing

# The exceptions cost nothing to import (the standard library only), so they are here at once.
from ._errors import (
    AmbiguousFingerprintError,
    APIError,
    ChecksumMismatchError,
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    ImageDataError,
    ImageExistsError,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    OperationError,
    OperationGoneError,
    PreconditionFailedError,
    TransferError,
    UnexpectedResponseError,
)
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._async.client import AsyncClient
    from ._async.events import AsyncEventStream
    from ._async.images import AsyncImagesAPI
    from ._async.operations import AsyncOperationsAPI
    from ._async.simplestreams import AsyncSimpleStreams, AsyncSimpleStreamsImages
    from ._build.build import ImageBuild
    from ._events import EventGap, EventRequestor, ImageEvent, LifecycleEvent, OperationEvent
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
    from ._sync.client import Client
    from ._sync.events import EventStream
    from ._sync.images import ImagesAPI
    from ._sync.operations import OperationsAPI
    from ._sync.simplestreams import SimpleStreams, SimpleStreamsImages

__all__ = [
    "APIError",
    "AmbiguousFingerprintError",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncImagesAPI",
    "AsyncOperationsAPI",
    "AsyncSimpleStreams",
    "AsyncSimpleStreamsImages",
    "ChecksumMismatchError",
    "Client",
    "ConfigurationError",
    "ConflictError",
    "EventGap",
    "EventRequestor",
    "EventStream",
    "ForbiddenError",
    "Image",
    "ImageAlias",
    "ImageAliasList",
    "ImageBuild",
    "ImageDataError",
    "ImageEvent",
    "ImageExistsError",
    "ImageList",
    "ImageSource",
    "ImagesAPI",
    "IncusConnectionError",
    "IncusError",
    "IncusTimeoutError",
    "InvalidInputError",
    "LeftBehind",
    "LifecycleEvent",
    "NotFoundError",
    "Operation",
    "OperationError",
    "OperationEvent",
    "OperationGoneError",
    "OperationStatus",
    "OperationsAPI",
    "PreconditionFailedError",
    "Remote",
    "RemoteConfig",
    "ServerEnvironment",
    "ServerInfo",
    "SimpleStreams",
    "SimpleStreamsImages",
    "TransferError",
    "UnexpectedResponseError",
    "__version__",
    "add_remote",
    "load_remotes",
]

#: Where the other public names live. They are imported on first use (PEP 562): their modules
#: pull in httpx, attrs and cattrs, and a blocking client needs none of the async flavour's
#: modules, nor an async one the blocking flavour's, nor a list the remotes' configuration.
#: ``import incus_images`` alone then costs little more than Python's start.
_LAZY_NAMES = {
    "AsyncClient": "._async.client",
    "AsyncImagesAPI": "._async.images",
    "AsyncOperationsAPI": "._async.operations",
    "AsyncEventStream": "._async.events",
    "AsyncSimpleStreams": "._async.simplestreams",
    "AsyncSimpleStreamsImages": "._async.simplestreams",
    "Client": "._sync.client",
    "ImagesAPI": "._sync.images",
    "OperationsAPI": "._sync.operations",
    "EventStream": "._sync.events",
    "EventGap": "._events",
    "EventRequestor": "._events",
    "ImageEvent": "._events",
    "LifecycleEvent": "._events",
    "OperationEvent": "._events",
    "Image": "._models",
    "ImageAlias": "._models",
    "ImageAliasList": "._models",
    "ImageBuild": "._build.build",
    "ImageList": "._models",
    "ImageSource": "._models",
    "Operation": "._models",
    "OperationStatus": "._models",
    "ServerEnvironment": "._models",
    "ServerInfo": "._models",
    "Remote": "._remotes",
    "RemoteConfig": "._remotes",
    "add_remote": "._remotes",
    "load_remotes": "._remotes",
    "SimpleStreams": "._sync.simplestreams",
    "SimpleStreamsImages": "._sync.simplestreams",
}


def __getattr__(name: str) -> _typing.Any:
    """Import a public name's module on first use, then keep the name here."""
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _importlib.import_module(module, __name__)
    _publish_loaded()
    return globals()[name]


def __dir__() -> list[str]:
    """The module's names, with the public ones not imported yet."""
    return sorted(set(globals()) | set(__all__))


def _publish_loaded() -> None:
    """Keep here, presented as public, every lazy public name whose module is loaded.

    Not only the name asked for: its module brought others (a client brings the models), whose
    objects reach the user without passing through this package (``images.list()`` returns an
    ImageList), so they are relabelled before one of them is pickled or shown.
    """
    namespace = globals()
    for name, module_name in _LAZY_NAMES.items():
        module = _sys.modules.get(__name__ + module_name)
        # A module another thread is still importing may lack the name yet: a later call
        # publishes it.
        if name not in namespace and module is not None and hasattr(module, name):
            public = getattr(module, name)
            _present_as_public(public)
            namespace[name] = public


def _present_as_public(public: object) -> None:
    """Make a public class or function report this package as its module.

    Tracebacks, reprs and pickles then name ``incus_images.NotFoundError``, not the private
    module it is written in (pickle finds it here again: every such name is in __all__).
    Class annotations are resolved first, in their own module: get_type_hints (and so
    cattrs) would otherwise look the names they use up in this package, which has not got
    them (``datetime``, ``Path``, ...). inspect.getsource() finds no source for these classes
    (it looks in this file); help(), pickle, cattrs and the documentation site do not need it.
    """
    if not isinstance(public, type | _types.FunctionType):
        return
    if not public.__module__.startswith(__name__ + "._"):
        return
    # A class's own annotations (Python 3.10 on: not its bases'), without importing inspect
    # (several ms; the bare import has only the errors to present).
    own = public.__annotations__ if isinstance(public, type) else {}
    if own:
        hints = _typing.get_type_hints(public, include_extras=True)
        public.__annotations__ = {key: hints[key] for key in own}
    public.__module__ = __name__


# The names imported above (the errors); the lazy ones are presented as they arrive.
for _name in __all__:
    if _name not in _LAZY_NAMES:
        _present_as_public(globals()[_name])
del _name
