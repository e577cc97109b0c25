"""Every request the SDK sends to an Incus server, built in one place (I/O-free).

Each function returns the :class:`~._protocol.Call` of one request: its method, its path
(from values already checked: fingerprints, alias names and operation ids never reach a path
unchecked, see ``_validate`` and ``_converter``), its parameters and body, and the ``action``
that names it in every error about it ("get image 'ab12'"). The rooms that send requests
(``_async/`` and its blocking twin, ``_remotes/``) take them from here; what a request
carries (the attrs models of request bodies) is in ``_requests``.
"""

from __future__ import annotations

from typing import Any

from ._protocol import (
    ALIASES,
    IMAGES,
    OPERATIONS,
    PROFILES,
    Call,
    alias_path,
    image_path,
    named_path,
)

INSTANCES = "/1.0/instances"
PROJECTS = "/1.0/projects"
CLUSTER_MEMBERS = "/1.0/cluster/members"


# --------------------------------------------------------------------------------------------
# The server.


def server_info() -> Call:
    return Call(method="GET", path="/1.0", action="read the server's information")


def cluster_members() -> Call:
    return Call(
        method="GET",
        path=CLUSTER_MEMBERS,
        params={"recursion": "1"},
        action="list the cluster's members",
        project_scoped=False,
    )


def project(name: str) -> Call:
    return Call(method="GET", path=named_path(PROJECTS, name), action=f"find project {name!r}")


def projects() -> Call:
    return Call(method="GET", path=PROJECTS, action="list the projects")


def join_with_token(client_name: str, token: str) -> Call:
    """Redeem a trust token: the server trusts the client certificate from then on."""
    return Call(
        method="POST",
        path="/1.0/certificates",
        action=f"join with the trust token for {client_name!r}",
        json={"trust_token": token},
    )


def profile(name: str, action: str) -> Call:
    return Call(method="GET", path=named_path(PROFILES, name), action=action)


# --------------------------------------------------------------------------------------------
# Images.


def list_images(*, recursion: int, filter: str | None, all_projects: bool) -> Call:
    params = {"recursion": str(recursion)}
    if filter is not None:
        params["filter"] = filter
    if all_projects:
        params["all-projects"] = "true"
    return Call(
        method="GET",
        path=IMAGES,
        params=params,
        action="list images" + (f" matching {filter!r}" if filter is not None else ""),
        # With all-projects, a project parameter other than the default is refused.
        project_scoped=not all_projects,
    )


def events(*, types: str, key: str, all_projects: bool) -> Call:
    """The websocket upgrade of the event stream (``key``: the Sec-WebSocket-Key)."""
    params = {"type": types}
    if all_projects:
        params["all-projects"] = "true"
    return Call(
        method="GET",
        path="/1.0/events",
        params=params,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": key,
        },
        action="watch events",
        # incusd refuses all-projects with a project: only one is sent.
        project_scoped=not all_projects,
    )


def image_fingerprints() -> Call:
    """Every image's URL (recursion 0): which images a server holds."""
    return Call(method="GET", path=IMAGES, params={"recursion": "0"}, action="list images")


def get_image(prefix: str, *, secret: str | None = None) -> Call:
    return Call(
        method="GET",
        path=image_path(prefix),
        action=f"get image '{prefix}'",
        params={"secret": secret} if secret is not None else {},
    )


def write_image(
    fingerprint: str, body: Any, *, replace: bool, action: str, etag: str | None
) -> Call:
    """PATCH (changes what the body carries) or PUT (``replace``: every writable field); with
    the ETag it was read with, a concurrent change fails it (412)."""
    return Call(
        method="PUT" if replace else "PATCH",
        path=image_path(fingerprint),
        action=action,
        headers={"If-Match": etag} if etag else {},
        json=body,
    )


def delete_image(prefix: str) -> Call:
    return Call(method="DELETE", path=image_path(prefix), action=f"delete image '{prefix}'")


def refresh_image(fingerprint: str) -> Call:
    return Call(
        method="POST",
        path=image_path(fingerprint, "refresh"),
        action=f"refresh image '{fingerprint}'",
    )


def image_secret(fingerprint: str) -> Call:
    return Call(
        method="POST",
        path=image_path(fingerprint, "secret"),
        action=f"create a download secret for image '{fingerprint}'",
        json={},
    )


def export_image(fingerprint: str, *, action: str, secret: str | None = None) -> Call:
    return Call(
        method="GET",
        path=image_path(fingerprint, "export"),
        action=action,
        params={"secret": secret} if secret is not None else {},
    )


def push_image(fingerprint: str, body: Any, *, action: str) -> Call:
    """Ask a server to push its image to another (``body``: an ImageExportPost)."""
    return Call(method="POST", path=image_path(fingerprint, "export"), action=action, json=body)


def new_image(
    *, action: str, json: Any = None, headers: dict[str, str | bytes] | None = None
) -> Call:
    """Make an image: from a body this client sends (``headers`` describe it), or from what
    ``json`` (an ImagesPost) names: another server's image, an instance, a push token."""
    return Call(method="POST", path=IMAGES, action=action, headers=headers or {}, json=json)


# --------------------------------------------------------------------------------------------
# Aliases.


def list_aliases() -> Call:
    return Call(method="GET", path=ALIASES, params={"recursion": "1"}, action="list aliases")


def get_alias(name: str) -> Call:
    return Call(method="GET", path=alias_path(name), action=f"get alias {name!r}")


def create_alias(body: Any, *, action: str) -> Call:
    return Call(method="POST", path=ALIASES, action=action, json=body)


def rename_alias(name: str, new_name: str, body: Any) -> Call:
    return Call(
        method="POST",
        path=alias_path(name),
        action=f"rename alias {name!r} to {new_name!r}",
        json=body,
    )


def update_alias(
    name: str, target: str, body: Any, *, etag: str | None = None, action: str | None = None
) -> Call:
    """PATCH the alias (only the fields the body carries change); with the ETag it was read
    with, a concurrent change fails it (412). incusd ignores If-Match on DELETE: an alias is
    moved with this, never deleted and made again."""
    return Call(
        method="PATCH",
        path=alias_path(name),
        action=action or f"update alias {name!r} to image '{target}'",
        headers={"If-Match": etag} if etag else {},
        json=body,
    )


def delete_alias(name: str) -> Call:
    return Call(method="DELETE", path=alias_path(name), action=f"delete alias {name!r}")


# --------------------------------------------------------------------------------------------
# Operations.


def get_operation(op_id: str) -> Call:
    return Call(
        method="GET",
        path=f"{OPERATIONS}/{op_id}",
        action=f"get operation {op_id}",
        project_scoped=False,
    )


def wait_operation(op_id: str, seconds: int, *, action: str) -> Call:
    """Long-poll the operation for ``seconds`` at most (the server answers when it ends)."""
    return Call(
        method="GET",
        path=f"{OPERATIONS}/{op_id}/wait",
        params={"timeout": str(seconds)},
        action=action,
        project_scoped=False,
    )


def cancel_operation(op_id: str) -> Call:
    return Call(
        method="DELETE",
        path=f"{OPERATIONS}/{op_id}",
        action=f"cancel operation {op_id}",
        project_scoped=False,
    )


# --------------------------------------------------------------------------------------------
# Instances (publish).


def get_instance(name: str) -> Call:
    return Call(method="GET", path=named_path(INSTANCES, name), action=f"get instance {name!r}")


def change_instance_state(name: str, state: str) -> Call:
    return Call(
        method="PUT",
        path=named_path(INSTANCES, name) + "/state",
        action=f"{state} instance {name!r} (publish force=True)",
        # As incus publish --force: no time limit on the stop, and force it.
        json={"action": state, "timeout": -1, "force": True},
    )
