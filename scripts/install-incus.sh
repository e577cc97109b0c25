#!/bin/sh
# Install incusd 6.0.x and the incus CLI from Debian's own packages (incus-base, incus-client:
# the tests check remotes against the real CLI, and the benchmarks measure against it).
#
# Debian 13 (trixie) carries it in its main suite; Debian 12 (bookworm) only in
# bookworm-backports, which this script adds by reusing the Debian mirror the machine
# is already configured with, so no mirror host name is written here.
# Needs root. Idempotent: does nothing when both are already installed.
set -eu

INCUSD=/usr/libexec/incus/incusd
if [ -x "$INCUSD" ] && command -v incus >/dev/null 2>&1; then
    echo "incusd already installed: $("$INCUSD" --version 2>/dev/null || echo unknown version)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-incus.sh: must run as root (it installs Debian packages)" >&2
    exit 1
fi

. /etc/os-release
export DEBIAN_FRONTEND=noninteractive

# The URI of the machine's main Debian archive: the first "deb" source whose suite is the
# release's own codename, in either the deb822 (*.sources) or the one-line (*.list) format.
debian_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v codename="$VERSION_CODENAME" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " codename " ") && uris != "") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = ""; suites = ""; uris = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]*#/ { next }
            tolower($1) == "types:"  { $1 = ""; types = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0 }
            tolower($1) == "uris:"   { $1 = ""; sub(/^ +/, ""); uris = $0 }
            END { if (!found) flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/\[[^]]*\]//' "$f" | awk -v codename="$VERSION_CODENAME" \
            '$1 == "deb" && $3 == codename { print $2; exit }'
    done
}

case "$VERSION_CODENAME" in
    bookworm)
        mirror=$(debian_mirror | head -n 1)
        if [ -z "$mirror" ]; then
            echo "install-incus.sh: no apt source for '$VERSION_CODENAME' found to reuse for backports" >&2
            exit 1
        fi
        keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        cat >/etc/apt/sources.list.d/incus-images-backports.sources <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: $keyring
SOURCES
        apt-get update -q
        apt-get install -y -q -t bookworm-backports --no-install-recommends incus-base incus-client
        ;;
    *)
        apt-get update -q
        apt-get install -y -q --no-install-recommends incus-base incus-client
        ;;
esac

"$INCUSD" --version
