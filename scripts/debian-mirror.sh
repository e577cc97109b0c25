# Sourced by install-incus.sh and fresh-debian.sh (POSIX sh): debian_mirror prints the mirror
# the machine's apt is configured with, so no mirror host name is ever written into the project.
# Needs VERSION_CODENAME (from /etc/os-release).

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
