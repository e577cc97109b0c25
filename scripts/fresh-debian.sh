#!/bin/sh
# Try the README's commands on a fresh Debian: sh scripts/fresh-debian.sh SUITE [SESSION...]
#
#   sh scripts/fresh-debian.sh trixie demo      Debian 13: the README's demo command
#   sh scripts/fresh-debian.sh bookworm tests   Debian 12: the README's test command
#
# Builds a minimal Debian SUITE with debootstrap (once, in $FRESH_DEBIAN_DIR, by default
# /var/tmp/incus-images-SUITE), clones this checkout's committed HEAD into its /root, and runs
# `sh scripts/bootstrap.sh SESSION...` there as root with an empty environment (CI is passed on),
# exactly as a user would on a new machine: the bootstrap installs incusd, Python's venv and
# the rest from that Debian's own archive. The exit status is the bootstrap's.
#
# The fresh system runs in a mount namespace of its own whose root is the new tree (pivot_root,
# not chroot: the kernel refuses new user namespaces, which containers need, to a chrooted
# process). Its /proc, /sys, /dev, /run and /tmp vanish with the namespace; nothing is left
# mounted. The network is the host's, as on a real machine: apt and pip reach their archives.
# Needs root, debootstrap (installed if missing), unshare and git.
set -eu
cd "$(dirname "$0")/.."

# The header above: asked for, on stdout; for a missing SUITE, its first lines on stderr.
case "${1:-}" in
    -h | --help)
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    "")
        sed -n '2,5s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
esac
suite=$1
shift
[ $# -gt 0 ] || set -- tests
if [ "$(id -u)" != 0 ]; then
    echo "fresh-debian.sh: must run as root (debootstrap, mount namespaces)" >&2
    exit 1
fi

root=${FRESH_DEBIAN_DIR:-/var/tmp/incus-images-$suite}
if [ ! -x "$root/usr/bin/apt-get" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
    fi
    . /etc/os-release
    . scripts/debian-mirror.sh
    mirror=$(debian_mirror | head -n 1)
    if [ -z "$mirror" ]; then
        echo "fresh-debian.sh: no apt source for '$VERSION_CODENAME' found to reuse" >&2
        exit 1
    fi
    # minbase: not even Python; the bootstrap must bring what it needs.
    debootstrap --variant=minbase "$suite" "$root" "$mirror"
fi

# A machine whose registries sit behind a proxy with a local CA trusts it system-wide; the
# fresh system gets the same trust (and nothing else of the host's).
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    need_ca_update=1
else
    need_ca_update=0
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"

checkout=$root/root/incus_images
rm -rf "$checkout"
git clone --quiet "$PWD" "$checkout"
echo "fresh-debian.sh: $suite at $root, checkout $(git -C "$checkout" log -1 --format=%h)," \
    "running: sh scripts/bootstrap.sh $*"

mkdir -p "$root/.host"
# The fresh system's own steps: trust the CA (ca-certificates may still be missing, so plain
# concatenation when update-ca-certificates is absent), then the README's command.
inner='
set -eu
if [ "$1" = 1 ]; then
    if command -v update-ca-certificates >/dev/null 2>&1; then
        update-ca-certificates >/dev/null
    else
        mkdir -p /etc/ssl/certs
        cat /usr/local/share/ca-certificates/*.crt >>/etc/ssl/certs/ca-certificates.crt
    fi
fi
shift
cd /root/incus_images
exec sh scripts/bootstrap.sh "$@"
'
# Everything below runs in the new mount namespace: mounts made there never reach the host.
exec unshare --mount --propagation private /bin/sh -eu -c '
root=$1
shift
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/run"
mount -t tmpfs tmpfs "$root/tmp"
cd "$root"
pivot_root . .host
umount -l /.host
exec /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TERM=dumb LANG=C.UTF-8 ${CI:+CI=$CI} /bin/sh -c "$@"
' fresh-debian "$root" "$inner" inner "$need_ca_update" "$@"
