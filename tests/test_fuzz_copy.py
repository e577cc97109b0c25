"""Property-based fuzzing (Hypothesis) of copy() against a hostile source.

The source answers the SDK with any image it likes (any fingerprint, size, type, alias names
and descriptions, properties, nested junk) and the target's pull reports any fingerprint
stored: the one asked for, one the target held before, another, or none. Whatever happens:

* the outcome is an Image or an IncusError, nothing else;
* the target never deletes an image it held before the copy began;
* every alias created on the target has a name a caller could have given (one rule for
  the caller's names and the source's), and at most MAX_COPIED_ALIASES come from the source.

Example counts follow tests/test_fuzz.py (FEWER: 200 in CI, 20 in a bare pytest run).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from hypothesis import example, given
from hypothesis import strategies as st

from incus_images import Client, Image, IncusError, InvalidInputError
from incus_images._async._copying import MAX_COPIED_ALIASES
from incus_images._validate import new_alias_name
from tests.fuzz_settings import FEWER
from tests.helpers import accepted_response, error_response, operation, sha256, sync_response
from tests.test_fuzz import NASTY, any_text, json_values

SOURCE = "https://source.test:8443"
TARGET = "https://target.test:8443"
ASKED = sha256(b"the image asked for")
HELD = sha256(b"an image the target held before")
OTHER = sha256(b"another image")
PULL_ID = "a1111111-1111-4111-8111-111111111111"
DELETE_ID = "c3333333-3333-4333-8333-333333333333"

alias_names = st.one_of(
    st.text(st.sampled_from(NASTY + "aZ09-\u202e\u2066\x9b\x1b"), max_size=10),
    any_text,
    st.just("x" * 256),
    json_values,
)
alias_entries = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"name": alias_names, "description": st.one_of(any_text, json_values)}
        ),
        json_values,
    ),
    max_size=6,
)
sizes = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), json_values)
fingerprints = st.one_of(st.sampled_from([ASKED, ASKED.upper(), HELD, OTHER, ""]), any_text)
stored = st.sampled_from([ASKED, HELD, OTHER, None, "../../etc"])


def source_image(fingerprint: Any, size: Any, aliases: Any, kind: Any) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "filename": "tiny.tar.gz",
        "size": size,
        "architecture": "x86_64",
        "type": kind,
        "public": True,
        "auto_update": False,
        "properties": {"os": "tiny"},
        "aliases": aliases,
        "profiles": ["default"],
        "cached": False,
        "created_at": "2024-01-01T00:00:00Z",
        "uploaded_at": "2024-01-01T00:00:00Z",
        "expires_at": "0001-01-01T00:00:00Z",
        "last_used_at": "0001-01-01T00:00:00Z",
    }


class Target:
    """The target's side: it held HELD, pulls, reports ``stored``; records every write."""

    def __init__(self, stored: str | None, copied: dict[str, Any]) -> None:
        self.stored = stored
        self.copied = copied
        self.arrived = False
        self.deleted: list[str] = []
        self.aliases: list[str] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        method = request.method
        if method == "GET" and path == "/1.0/images":
            return sync_response([f"/1.0/images/{HELD}"])
        if method == "POST" and path == "/1.0/images":
            return accepted_response(operation(PULL_ID))
        if method == "GET" and path == f"/1.0/operations/{PULL_ID}/wait":
            self.arrived = True
            metadata = None if self.stored is None else {"fingerprint": self.stored, "size": "1"}
            return sync_response(operation(PULL_ID, status_code=200, metadata=metadata))
        if method == "GET" and path.startswith("/1.0/images/aliases/"):
            return error_response(404, "Image alias not found")
        if method == "POST" and path == "/1.0/images/aliases":
            self.aliases.append(json.loads(request.content)["name"])
            return sync_response(None, status=201)
        if method == "DELETE" and path.startswith("/1.0/images/"):
            self.deleted.append(path.rsplit("/", 1)[1])
            return accepted_response(operation(DELETE_ID, description="Deleting image"))
        if method == "GET" and path == f"/1.0/operations/{DELETE_ID}/wait":
            return sync_response(operation(DELETE_ID, status_code=200))
        if method == "GET" and path.startswith("/1.0/images/"):
            fingerprint = path.rsplit("/", 1)[1]
            if fingerprint == HELD or (self.arrived and fingerprint == self.stored):
                return sync_response({**self.copied, "fingerprint": fingerprint, "aliases": []})
            return error_response(404, "Image not found")
        return error_response(500, f"unexpected {method} {path}")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@FEWER
@given(
    fingerprint=fingerprints,
    size=sizes,
    aliases=alias_entries,
    kind=st.one_of(st.sampled_from(["container", "virtual-machine", ""]), json_values),
    stored=stored,
    copy_aliases=st.booleans(),
)
@example(
    fingerprint=ASKED,
    size=10,
    aliases=[{"name": "nul\x00x", "description": ""}],
    kind="container",
    stored=HELD,
    copy_aliases=True,
)
def test_a_hostile_source_never_costs_the_target_an_image(
    fingerprint: Any, size: Any, aliases: Any, kind: Any, stored: str | None, copy_aliases: bool
) -> None:
    shown = source_image(fingerprint, size, aliases, kind)
    target_side = Target(stored, source_image(ASKED, 10, [], "container"))

    def source_side(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/1.0/images/{ASKED}":
            # json.dumps as it is: any code point escaped, NaN and Infinity as Python writes
            # them (a hostile server may send what JSON forbids).
            body = {"type": "sync", "status": "Success", "status_code": 200, "metadata": shown}
            return httpx.Response(
                200, content=json.dumps(body), headers={"Content-Type": "application/json"}
            )
        return error_response(404, "not found")

    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="source.test").mock(side_effect=source_side)
        mock.route(host="target.test").mock(side_effect=target_side.answer)
        with Client(SOURCE, verify=False) as source, Client(TARGET, verify=False) as target:
            try:
                result = target.images.copy(
                    ASKED, source, mode="pull", copy_aliases=copy_aliases, aliases=["mine"]
                )
            except IncusError:
                result = None
    assert HELD not in target_side.deleted
    for name in target_side.aliases:
        assert new_alias_name(name) == name
    assert len(target_side.aliases) <= 1 + MAX_COPIED_ALIASES
    if result is not None:
        assert isinstance(result, Image)
        assert result.fingerprint == ASKED


def test_the_rule_refuses_what_the_fuzzer_feeds_it() -> None:
    """The property above relies on new_alias_name refusing the source's worst names."""
    for name in ("nul\x00x", "\u202e", "\x9b", "x" * 256, ""):
        with pytest.raises(InvalidInputError):
            new_alias_name(name)
