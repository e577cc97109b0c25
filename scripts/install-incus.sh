#!/bin/sh
# Install incusd 6.0.x and the incus CLI from Debian's own packages: sh scripts/install-incus.sh
# (incus-base, and incus-client, which it depends on: the tests check remotes against the real
# CLI, and the benchmarks measure against it).
#
#   sh scripts/install-incus.sh [PACKAGE...]   also these packages of the same suite (e.g.
#                                               incus-extra, for incus-simplestreams)
#
# Debian 13 (trixie) carries it in its main suite; Debian 12 (bookworm) only in
# bookworm-backports, which this script adds by reusing the Debian mirror the machine
# is already configured with, so no mirror host name is written here.
# Needs root. Idempotent: does nothing when both are already installed.
set -eu

# Before anything else: asking for help must install nothing.
case "${1:-}" in
    -h | --help)
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
esac

INCUSD=/usr/libexec/incus/incusd
installed() {
    dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}
extras=""
for package; do
    installed "$package" || extras="$extras $package"
done
if [ -x "$INCUSD" ] && command -v incus >/dev/null 2>&1 && [ -z "$extras" ]; then
    echo "incusd already installed: $("$INCUSD" --version 2>/dev/null || echo unknown version)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-incus.sh: must run as root (it installs Debian packages)" >&2
    exit 1
fi

. /etc/os-release
export DEBIAN_FRONTEND=noninteractive

. "$(dirname "$0")/debian-mirror.sh"

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
        apt-get install -y -q -t bookworm-backports --no-install-recommends \
            incus-base incus-client $extras
        ;;
    *)
        apt-get update -q
        apt-get install -y -q --no-install-recommends incus-base incus-client $extras
        ;;
esac

"$INCUSD" --version
