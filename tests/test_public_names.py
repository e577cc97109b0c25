"""The public surface as a reader meets it: help(), tracebacks, pickles, type hints.

Public classes and functions report ``incus_images`` as their module (incus_images/__init__.py
relabels them), so these check that the relabelling breaks nothing that looks a class up by
its module: pickle, typing.get_type_hints, and the cattrs hooks built from the hints.
"""

from __future__ import annotations

import inspect
import pickle
import pydoc
import traceback
import typing
from datetime import UTC, datetime
from pathlib import Path
from types import FunctionType
from typing import Any

import attrs
import pytest
import respx

import incus_images
from incus_images import (
    AsyncClient,
    AsyncSimpleStreams,
    Client,
    EventGap,
    EventRequestor,
    Image,
    ImageAlias,
    ImageEvent,
    ImageSource,
    IncusError,
    LeftBehind,
    LifecycleEvent,
    NotFoundError,
    Operation,
    OperationEvent,
    Remote,
    RemoteConfig,
    ServerEnvironment,
    ServerInfo,
    SimpleStreams,
)
from incus_images._converter import make_converter
from incus_images._errors import note_left_behind
from tests.helpers import UNIX_BASE, error_response, image, operation

FP = "6bcb9190f8bea56cb09463728faddd8b72e996506d3575f0e027cdbbe0440c05"
PUBLIC = {name: getattr(incus_images, name) for name in incus_images.__all__}
CLASSES_AND_FUNCTIONS = {
    name: value for name, value in PUBLIC.items() if isinstance(value, type | FunctionType)
}
ERRORS = {name: value for name, value in CLASSES_AND_FUNCTIONS.items() if name.endswith("Error")}
MODELS = {name: value for name, value in CLASSES_AND_FUNCTIONS.items() if attrs.has(value)}


# --------------------------------------------------------------------------------------------
# help()


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_help_shows_what_images_and_operations_are(client_class: type[Any]) -> None:
    text = pydoc.render_doc(client_class, renderer=pydoc.plaintext)
    properties = text.split("Readonly properties defined here:", 1)[1]
    assert "images\n" in properties
    assert "The images and image aliases of this server" in properties
    assert "operations\n" in properties
    assert "The server's background operations" in properties
    assert "The Incus project this client works in" in properties


@pytest.mark.parametrize("client_class", [Client, AsyncClient])
def test_images_and_operations_are_the_same_objects_on_every_access(
    client_class: type[Any],
) -> None:
    client = client_class("unix:///nonexistent/incus.sock")
    assert client.images is client.images
    assert client.operations is client.operations
    with pytest.raises(AttributeError):
        client.images = None


# --------------------------------------------------------------------------------------------
# The module public names report.


def test_every_public_class_and_function_reports_the_package_as_its_module() -> None:
    assert CLASSES_AND_FUNCTIONS, "__all__ has classes and functions"
    wrong = {
        name: value.__module__
        for name, value in CLASSES_AND_FUNCTIONS.items()
        if value.__module__ != "incus_images"
    }
    assert wrong == {}
    assert incus_images.NotFoundError.__module__ == "incus_images"
    # The classes still know where their code is (tracebacks show the real file and line).
    assert Client.images.fget.__module__ == "incus_images._sync.client"


def test_a_raised_error_is_named_by_its_public_path() -> None:
    with respx.mock(base_url=UNIX_BASE) as mock:
        mock.get(url__regex=r"/1\.0/images/ab12").mock(
            return_value=error_response(404, "not found")
        )
        client = Client("unix:///nonexistent/incus.sock")
        with pytest.raises(NotFoundError) as caught:
            client.images.get("ab12")
    last_line = traceback.format_exception(caught.value)[-1]
    assert last_line.startswith("incus_images.NotFoundError: "), last_line


# --------------------------------------------------------------------------------------------
# What looks classes up by module: pickle, get_type_hints, cattrs.


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_every_error_pickles_by_its_public_name(name: str) -> None:
    error = ERRORS[name](f"{name} happened", server="unix:///x", status_code=404, fingerprint=FP)
    # Protocol 0 names a class as "c<module>\n<name>\n": the public path, nothing private.
    assert f"cincus_images\n{name}\n".encode() in pickle.dumps(error, protocol=0)
    data = pickle.dumps(error)
    restored = pickle.loads(data)
    assert type(restored) is type(error)
    assert (str(restored), restored.server, restored.status_code, restored.fingerprint) == (
        f"{name} happened",
        "unix:///x",
        404,
        FP,
    )


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_what_an_error_left_behind_survives_a_pickle(name: str) -> None:
    error = note_left_behind(ERRORS[name](f"{name} happened"), LeftBehind.DELETED, "deleted")
    restored = pickle.loads(pickle.dumps(error))
    assert restored.left_behind is LeftBehind.DELETED
    assert restored.__notes__ == error.__notes__
    assert b"cincus_images\nLeftBehind\n" in pickle.dumps(LeftBehind.DELETED, protocol=0)


def test_a_configuration_error_keeps_its_path_through_a_pickle() -> None:
    error = incus_images.ConfigurationError("config.yml is broken", path="/c/config.yml")
    assert pickle.loads(pickle.dumps(error)).path == "/c/config.yml"


def _sample_models() -> list[Any]:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    alias = ImageAlias(name="debian/12", target=FP, description="d", type="container")
    return [
        alias,
        ImageSource(alias="debian/12", server="https://images.example", protocol="simplestreams"),
        Image(
            fingerprint=FP,
            properties={"os": "debian"},
            aliases=[alias],
            created_at=when,
            update_source=ImageSource(alias="a"),
        ),
        Operation(id="41b69ae9-44bf-4b27-a0e5-23d3b8614fbf", metadata={"a": [1]}, created_at=when),
        ServerEnvironment(addresses=["127.0.0.1:8443"], server_name="n1"),
        ServerInfo(auth="trusted", environment=ServerEnvironment(server_name="n1")),
        Remote(name="prod", addr="https://127.0.0.1:8443", server_certificate=Path("/x.crt")),
        RemoteConfig(
            directory=Path("/c"),
            path=Path("/c/config.yml"),
            default_remote="local",
            remotes={"local": Remote(name="local", addr="unix://")},
        ),
        SimpleStreams("https://images.example"),
        AsyncSimpleStreams("https://images.example/streams", timeout=5),
        ImageEvent(
            action="image-alias-renamed",
            alias="b",
            old_alias="a",
            project="default",
            requestor=EventRequestor(username="root", protocol="unix"),
            at=when,
        ),
        LifecycleEvent(
            action="project-created",
            source="/1.0/projects/p2",
            project="p2",
            context={"a": 1},
            at=when,
        ),
        OperationEvent(operation=Operation(id="41b69ae9"), project="default", at=when),
        EventGap(since=when, until=when),
        EventRequestor(username="root"),
    ]


def test_the_samples_cover_every_public_model() -> None:
    assert {type(model).__name__ for model in _sample_models()} == set(MODELS)


@pytest.mark.parametrize("model", _sample_models(), ids=lambda model: type(model).__name__)
def test_every_model_pickles_by_its_public_name(model: Any) -> None:
    restored = pickle.loads(pickle.dumps(model))
    assert type(restored) is type(model)
    assert restored == model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_resolvable_type_hints(name: str) -> None:
    hints = typing.get_type_hints(MODELS[name])
    assert set(hints) >= {field.name for field in attrs.fields(MODELS[name])}
    unresolved = {key: hint for key, hint in hints.items() if isinstance(hint, str)}
    assert unresolved == {}


def test_hints_that_name_what_the_package_does_not_export_resolve() -> None:
    # datetime and Path are imported by the models' own modules, not by incus_images.
    assert typing.get_type_hints(Image)["created_at"] == datetime | None
    assert typing.get_type_hints(Remote)["server_certificate"] == Path | None


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Image, image(FP, aliases=[{"name": "a", "description": ""}])),
        (ImageAlias, {"name": "a", "target": FP, "description": "", "type": "container"}),
        (ImageSource, {"alias": "a", "server": "https://x", "protocol": "simplestreams"}),
        (Operation, operation()),
        (
            ServerInfo,
            {"auth": "trusted", "environment": {"server_name": "n1", "addresses": ["a:1"]}},
        ),
        (ServerEnvironment, {"server_name": "n1", "server_clustered": True}),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_a_converter_made_after_the_relabelling_structures_every_answer_model(
    cls: type[Any], data: dict[str, Any]
) -> None:
    built = make_converter(strict=True).structure(data, cls)
    assert type(built) is cls
    assert make_converter(strict=True).unstructure(built) is not None


def test_the_error_hierarchy_is_unchanged_by_the_relabelling() -> None:
    assert all(issubclass(error, IncusError) for error in ERRORS.values())
    assert issubclass(incus_images.InvalidInputError, ValueError)
    assert not issubclass(incus_images.ConfigurationError, ValueError)
    assert not issubclass(incus_images.UnexpectedResponseError, ValueError)
    assert issubclass(incus_images.ChecksumMismatchError, incus_images.TransferError)
    assert issubclass(incus_images.ImageDataError, incus_images.TransferError)


# --------------------------------------------------------------------------------------------
# Signatures: the seed's positional order, everything added since keyword-only.

#: The arguments each method takes by position (after self), as the seed (and the README)
#: have them; every other argument is keyword-only.
POSITIONAL = {
    "list": ["recursion"],
    "get": ["fingerprint"],
    "create": ["image_data", "filename", "public", "auto_update", "properties", "wait"],
    "delete": ["fingerprint", "wait"],
    "update": ["fingerprint", "properties", "wait"],
    "export": ["fingerprint", "target_path"],
    "refresh": ["fingerprint"],
    "copy": ["image", "source"],
    "ensure": ["image", "source"],
    "publish": ["source"],
    "create_secret": ["fingerprint"],
    "create_alias": ["name", "target", "description"],
    "get_alias": ["name"],
    "get_by_alias": ["name"],
    "update_alias": ["name", "target", "description"],
    "rename_alias": ["name", "new_name"],
    "delete_alias": ["name"],
    "list_aliases": [],
    "watch": [],
}


@pytest.mark.parametrize("api", [incus_images.ImagesAPI, incus_images.AsyncImagesAPI])
@pytest.mark.parametrize("method", sorted(POSITIONAL))
def test_only_the_seed_arguments_are_positional(api: type[Any], method: str) -> None:
    parameters = list(inspect.signature(getattr(api, method)).parameters.values())[1:]
    positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == POSITIONAL[method]
    assert all(
        p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for p in parameters
    )


def test_every_public_method_of_the_images_api_is_listed() -> None:
    public = {name for name in vars(incus_images.ImagesAPI) if not name.startswith("_")}
    assert public == set(POSITIONAL)


@pytest.mark.parametrize("api", [incus_images.OperationsAPI, incus_images.AsyncOperationsAPI])
def test_operations_wait_keeps_its_seed_order(api: type[Any]) -> None:
    assert list(inspect.signature(api.wait).parameters) == ["self", "operation", "timeout"]
