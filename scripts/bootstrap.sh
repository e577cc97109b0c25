#!/bin/sh
# Set up this machine for nox sessions and run them:
#
#   sh scripts/bootstrap.sh [--dry-run] [SESSION...] [-- ARGS...]
#
#   sh scripts/bootstrap.sh demo     the demo against the local daemon (throwaway if none runs)
#   sh scripts/bootstrap.sh tests    the whole test suite (the default)
#   sh scripts/bootstrap.sh docs     the documentation site, into site/
#
# As root it first installs from Debian's archive what the sessions asked for need and the
# machine lacks, and nothing else:
#   every session   python3-venv (Python's venv module)
#   demo, docs      incusd and the incus CLI (incus-base, incus-client: scripts/install-incus.sh,
#                   which on Debian 12 adds bookworm-backports as an apt source)
#   tests, interpreters, deps-lowest, deps-newest, reliability
#                   incusd and the incus CLI, incus-extra (incus-simplestreams), openssl,
#                   iproute2, busybox-static, dnsmasq-base, squashfs-tools
#   bench           incusd and the incus CLI, openssl, curl, time
#   gen, lint, typecheck, build   nothing more
# Then nox goes into a venv in .tools/, and nox makes each session's venv in .nox/ (both inside
# the checkout), into which the session installs the Python packages it needs.
# Arguments after "--" go to the sessions (e.g. pytest options). --dry-run only says what the
# sessions need and what of it the machine lacks, and installs and runs nothing.
set -eu

# Before anything else: asking for help must install and run nothing.
case "${1:-}" in
    -h | --help)
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
esac
cd "$(dirname "$0")/.."

dry_run=0
if [ "${1:-}" = --dry-run ]; then
    dry_run=1
    shift
fi
# No session named (nothing, or only arguments for it): the test suite.
[ $# -gt 0 ] && [ "$1" != -- ] || set -- tests "$@"

# What the sessions asked for need (the names before "--"; any other name is refused here,
# before anything is installed for it).
incus=0 tests=0 bench=0
for name; do
    [ "$name" != -- ] || break
    case "$name" in
        demo) incus=1 ;;
        tests | interpreters | deps-lowest | deps-newest | reliability) incus=1 tests=1 ;;
        bench) incus=1 bench=1 ;;
        # The site's tour page is the notebook run against a throwaway daemon.
        docs) incus=1 ;;
        gen | lint | typecheck | build) ;;
        *)
            echo "bootstrap: unknown session '$name' (sh scripts/bootstrap.sh --help lists them)" >&2
            exit 2
            ;;
    esac
done

needs="" missing=""
# need PACKAGE CHECK...: the sessions need Debian's PACKAGE; the machine lacks it unless CHECK
# succeeds.
need() {
    package=$1
    shift
    needs="$needs $package"
    "$@" >/dev/null 2>&1 || missing="$missing $package"
}
# The .tools/ and .nox/ venvs (a minimal Debian has not even python3: this brings it).
need python3-venv python3 -c 'import ensurepip, venv'
if [ $tests = 1 ] || [ $bench = 1 ]; then
    # Client certificates of the HTTPS tests and of the copy benchmark.
    need openssl command -v openssl
fi
if [ $tests = 1 ]; then
    # The copy tests run one daemon in a network namespace of its own (ip netns).
    need iproute2 command -v ip
    # The publish tests start containers whose whole userland is busybox.
    need busybox-static test -x /bin/busybox
    # The incus-user test: incus-user gives each user a bridge, which incusd runs dnsmasq for.
    need dnsmasq-base test -x /usr/sbin/dnsmasq
    # The simplestreams tree of the catalogue tests: a squashfs rootfs (incus-simplestreams
    # itself comes with incusd, below).
    need squashfs-tools command -v mksquashfs
fi
if [ $bench = 1 ]; then
    # The benchmark's references and its RSS probe.
    need curl command -v curl
    need time test -x /usr/bin/time
fi
# incusd and the CLI come from scripts/install-incus.sh (a backports source on Debian 12), not
# from the apt-get line below; it does nothing when both are there.
incus_missing=0 incus_packages="incus-base incus-client" incus_extras=""
if [ $tests = 1 ]; then
    # incus-simplestreams builds the tests' real simplestreams tree; from incusd's suite.
    incus_extras="incus-extra"
    command -v incus-simplestreams >/dev/null 2>&1 || incus_missing=1
fi
if [ $incus = 1 ]; then
    incus_packages="$incus_packages $incus_extras"
    needs="$needs $incus_packages"
    if [ ! -x /usr/libexec/incus/incusd ] || ! command -v incus >/dev/null 2>&1; then
        incus_missing=1
    fi
fi

if [ $dry_run = 1 ]; then
    echo "needs:$needs"
    [ $incus_missing = 0 ] || missing="$missing $incus_packages"
    echo "missing:$missing"
    exit 0
fi

if [ "$(id -u)" = 0 ]; then
    [ $incus_missing = 0 ] || sh scripts/install-incus.sh $incus_extras
    if [ -n "$missing" ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    fi
else
    # Not root: nothing can be installed; a session that needs what is missing fails itself.
    [ $incus_missing = 0 ] || missing="$missing $incus_packages"
    [ -z "$missing" ] || echo "bootstrap: not root, so not installing:$missing" >&2
fi

if [ ! -x .tools/bin/nox ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install -q --disable-pip-version-check "nox>=2025.2"
fi

# nox takes the session names, then whatever follows "--" as the sessions' arguments.
exec .tools/bin/nox --sessions "$@"
