#!/bin/sh
# Set up a fresh machine and run nox sessions: sh scripts/bootstrap.sh SESSION [SESSION...]
#
#   sh scripts/bootstrap.sh demo     the demo against the local daemon (throwaway if none runs)
#   sh scripts/bootstrap.sh tests    the whole test suite
#
# As root it installs what is missing: incusd from Debian's packages (scripts/install-incus.sh),
# openssl, iproute2, busybox-static, dnsmasq-base and Python's venv module. nox itself goes into .tools/ inside the checkout.
# Arguments after "--" go to the sessions (e.g. pytest options).
set -eu
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    sh scripts/install-incus.sh
    missing=""
    command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
    # The copy tests run one daemon in a network namespace of its own (ip netns).
    command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
    # The publish tests start containers whose whole userland is busybox.
    [ -x /bin/busybox ] || missing="$missing busybox-static"
    # The incus-user test: incus-user gives each user a bridge, which incusd runs dnsmasq for.
    [ -x /usr/sbin/dnsmasq ] || missing="$missing dnsmasq-base"
    # The benchmark's references and its RSS probe (nox -s bench).
    command -v curl >/dev/null 2>&1 || missing="$missing curl"
    [ -x /usr/bin/time ] || missing="$missing time"
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing="$missing python3-venv"
    if [ -n "$missing" ]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
    fi
else
    echo "bootstrap: not root; assuming incusd, openssl and python3-venv are installed" >&2
fi

if [ ! -x .tools/bin/nox ]; then
    python3 -m venv .tools
    .tools/bin/python -m pip install -q --disable-pip-version-check "nox>=2025.2"
fi

[ $# -gt 0 ] || set -- tests
# nox takes the session names, then whatever follows "--" as the sessions' arguments.
exec .tools/bin/nox --sessions "$@"
