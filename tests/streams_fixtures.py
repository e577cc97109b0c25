"""Session fixtures of a real simplestreams tree (tests/streams_tree.py), served over HTTPS on
127.0.0.1 by the project's server (scripts/simplestreams_server.py).

* ``streams_tree``: a ``StreamsTree``: ``path`` (the tree's root, read-only for tests) and
  ``images`` (``TreeImage``: ``key``, ``fingerprint``, ``type``, ``architecture`` (Incus's
  name), ``catalogue_architecture``, ``product``, ``version``, ``aliases`` (the product's),
  ``size``, ``files``, ``properties``, ``creation_date``); ``image(key)`` and
  ``fingerprints``.
* ``streams_server``: a ``StreamsServer``: ``url``, ``certificate`` (the PEM text of the
  server's self-signed certificate), ``tree`` and ``server`` (the ``SimpleStreamsServer``,
  whose ``requests`` lists the paths asked for since the session began).

A machine without the tools (incus-simplestreams from incus-extra, mksquashfs from
squashfs-tools) fails these fixtures' tests with the packages to install: never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest
from simplestreams_server import SimpleStreamsServer

from tests.streams_tree import StreamsTree, ToolMissing, build_tree


@attrs.frozen
class StreamsServer:
    url: str
    certificate: str
    tree: StreamsTree
    server: SimpleStreamsServer


@pytest.fixture(scope="session")
def streams_tree(tmp_path_factory: pytest.TempPathFactory) -> StreamsTree:
    """The tree, built once a session (a fraction of a second)."""
    try:
        return build_tree(tmp_path_factory.mktemp("streams") / "tree")
    except ToolMissing as exc:
        pytest.fail(
            f"{exc}: install them (apt-get install incus-extra squashfs-tools)", pytrace=False
        )


@pytest.fixture(scope="session")
def streams_server(streams_tree: StreamsTree) -> Iterator[StreamsServer]:
    """The tree served over HTTPS on 127.0.0.1 for the whole session."""
    with SimpleStreamsServer.from_tree(streams_tree.path) as server:
        yield StreamsServer(
            url=server.url, certificate=server.certificate_pem, tree=streams_tree, server=server
        )
