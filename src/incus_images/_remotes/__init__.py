"""The incus CLI's remotes: read its configuration, and add a remote as ``incus remote add`` does.

The configuration is where the CLI keeps it (lxc/incus ``shared/cliconfig``): the directory
``$INCUS_CONF``, else ``~/.config/incus``, holds ``config.yml`` (``default-remote`` and
``remotes``), the client certificate ``client.crt``/``client.key`` (or a remote's own
``clientcerts/<remote>.crt``/``.key``) and the pinned server certificates
``servercerts/<remote>.crt``. Remotes of the system-wide ``$INCUS_GLOBAL_CONF/config.yml``
(else ``/etc/incus``) are added unless the user's file names them too. Without a
``config.yml`` the CLI knows the built-in remotes ``local`` (the local daemon) and ``images``
(the community simplestreams server); ``local`` is always there.

:func:`add_remote` is a plain blocking call in both flavours (it runs once, at set-up time):
it talks to the server with httpx directly and writes the same files the CLI would, each
atomically, under a lock of the configuration (``config.yml.lock``) that other calls of it,
in any process, wait for. The trust token it redeems is input an attacker may have written:
it is decoded with bounds, its addresses must be ``host:port``, and the server must show the
certificate whose fingerprint the token names before the token's secret is sent.

Every file of the configuration is read as ``_small_files`` reads: a regular file of at most
1 MiB, or an InvalidInputError naming it; certificates are checked by ``_tls``'s one rule.
"""

from .adding import add_remote
from .config import Remote, RemoteConfig, load_remotes, remote_name
from .connect import RemoteTarget, remote_endpoint, simplestreams_remote
from .tokens import TrustToken, decode_token

__all__ = [
    "Remote",
    "RemoteConfig",
    "RemoteTarget",
    "TrustToken",
    "add_remote",
    "decode_token",
    "load_remotes",
    "remote_endpoint",
    "remote_name",
    "simplestreams_remote",
]
