"""The one thing the generated tests cannot show: a blocking Client copies from an
AsyncSimpleStreams (tests/_async shows AsyncClient copying from a SimpleStreams), and the two
flavours' objects are distinct values over one base."""

from __future__ import annotations

import json
import pickle

import respx

from incus_images import AsyncSimpleStreams, Client, SimpleStreams
from incus_images._simplestreams import SimpleStreamsSource
from tests.helpers import UNIX_BASE, accepted_response, operation

URL = "https://images.example/streams"


def test_a_blocking_client_copies_from_an_async_image_server() -> None:
    with respx.mock(base_url=UNIX_BASE) as mock:
        post = mock.post("/1.0/images").mock(
            return_value=accepted_response(operation("0b2ad4b7-2a3e-4e1c-9d4a-3f1e1b1a2c3d"))
        )
        with Client("unix:///nonexistent/incus.sock") as client:
            client.images.copy("debian/12", AsyncSimpleStreams(URL), wait=False)
    source = json.loads(post.calls[0].request.content)["source"]
    assert (source["server"], source["protocol"]) == (URL, "simplestreams")


def test_both_flavours_are_sources_and_distinct_values() -> None:
    blocking, asynchronous = SimpleStreams(URL), AsyncSimpleStreams(URL)
    assert isinstance(blocking, SimpleStreamsSource)
    assert isinstance(asynchronous, SimpleStreamsSource)
    assert blocking != asynchronous
    assert blocking == SimpleStreams(URL + "/")
    assert SimpleStreams(URL, timeout=5) != blocking
    restored = pickle.loads(pickle.dumps(asynchronous))
    assert restored == asynchronous
    assert restored.images is restored.images


def test_nothing_is_requested_before_the_catalogue_is_needed() -> None:
    with respx.mock(assert_all_mocked=True) as mock:
        SimpleStreams(URL).images  # noqa: B018
        assert mock.calls.call_count == 0
