#!/usr/bin/env bash
# test/package/deb.sh -- the Debian package built, installed, run and removed (TAP).
#
# Builds postgresql-15-payflow with `dpkg-buildpackage -us -uc -b` in a copy
# of the tree (the .deb lands in a temp dir, never beside the checkout),
# checks its name, version, dependencies and files, installs it on a
# PostgreSQL 15 tree where payflow was never `make install`ed, creates the
# extension in a throwaway cluster that preloads the packaged library, runs
# a smoke test, purges the package, and checks that no payflow file is left.
#
# Which tree: PF_PGBIN (test/lib/cluster.sh), as for every test.
#  - Debian's own (/usr/lib/postgresql/15, the default, as in CI): the
#    package is installed on the system with dpkg, for real.  First
#    `make uninstall` takes out the payflow that test/run.sh make-installed;
#    at the end it is make-installed again if it was there before, so the
#    tree is left as it was, also when a check fails half way.
#  - a relocated copy (PF_PGBIN=/opt/x/usr/lib/postgresql/15/bin, for
#    checkouts that share a machine): neither the system tree nor that copy
#    is touched.  The test copies the tree into a temp dir, takes payflow out
#    of the copy, and installs the package there with `dpkg --root` (a dpkg
#    database of its own, dependencies checked against the host's), then
#    runs the same checks.
# PF_DEB_OVERLAY=1 (below) runs the system mode without changing the system.
#
# Run as root: it may apt-get the build dependencies (only those missing;
# debhelper and postgresql-server-dev-all are installed here, not by the
# suite-wide pf_install_deps), and dpkg and the clusters need it.
set -uo pipefail

# PF_DEB_OVERLAY=1: the system mode, in a private mount namespace whose /usr
# and /var/lib/dpkg are overlays in a temp dir, so that the real make
# uninstall, dpkg -i, dpkg --purge and make install are seen by nothing else
# on the machine (for development where others use the system tree; with
# the build dependencies already installed, as apt-get would write to /etc).
if [ "${PF_DEB_OVERLAY:-}" = 1 ] && [ -z "${PF_DEB_IN_OVERLAY:-}" ]; then
    ov=$(mktemp -d /tmp/payflow-deb-overlay.XXXXXX)
    mkdir -p "$ov/usr/u" "$ov/usr/w" "$ov/dpkg/u" "$ov/dpkg/w"
    env -u PF_PGBIN -u PG_CONFIG PF_DEB_IN_OVERLAY=1 unshare -m --propagation private bash -c '
        mount -t overlay overlay -o "lowerdir=/usr,upperdir=$1/usr/u,workdir=$1/usr/w" /usr &&
        mount -t overlay overlay -o "lowerdir=/var/lib/dpkg,upperdir=$1/dpkg/u,workdir=$1/dpkg/w" /var/lib/dpkg &&
        exec bash "$2"' _ "$ov" "$(readlink -f "$0")"
    rc=$?
    rm -rf "$ov"
    exit $rc
fi
cd "$(dirname "$0")/../.."
. test/lib/cluster.sh

PKG=postgresql-15-payflow
PF_DEB_PACKAGES="build-essential dpkg-dev debhelper postgresql-server-dev-all
  libcurl4-openssl-dev libssl-dev zlib1g-dev"
SYSTEM_BIN=/usr/lib/postgresql/15/bin

WORK=$(mktemp -d /tmp/payflow-deb.XXXXXX)
chmod 755 "$WORK"   # the build-time pg_regress cluster runs as postgres, in here

# Put the system tree back as it was, whatever happened.
WAS_MAKE_INSTALLED=no
WE_INSTALLED=no
cleanup() {
    if [ "${MODE:-}" = system ]; then
        [ "$WE_INSTALLED" = no ] || [ "$(pkg_status)" = not-installed ] ||
            dpkg --purge "$PKG" >/dev/null 2>&1
        if [ "$WAS_MAKE_INSTALLED" = yes ] && [ ! -e "$($SYSTEM_BIN/pg_config --pkglibdir)/payflow.so" ]; then
            make -s PG_CONFIG="$SYSTEM_BIN/pg_config" >/dev/null &&
                make -s install PG_CONFIG="$SYSTEM_BIN/pg_config" >/dev/null
        fi
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

n=0
failed=0
# check NAME COMMAND...: one TAP point; the command's output is shown on failure.
check() {
    local name=$1; shift
    n=$((n + 1))
    if "$@" >"$WORK/out" 2>&1; then
        echo "ok $n - $name"
    else
        echo "not ok $n - $name"
        failed=$((failed + 1))
        tail -n 40 "$WORK/out" | sed 's/^/#   /'
    fi
}
bail() { echo "Bail out! $*"; exit 1; }

if [ "$(readlink -f "$PF_PGBIN")" = "$(readlink -f "$SYSTEM_BIN")" ]; then
    MODE=system
    ROOT=
else
    MODE=relocated
    ROOT=$WORK/root
    src_root=$(cd "$PF_PGBIN/../../../../.." && pwd)
    [ "$src_root/usr/lib/postgresql/15/bin" -ef "$PF_PGBIN" ] ||
        bail "PF_PGBIN=$PF_PGBIN is not DIR/usr/lib/postgresql/15/bin"
fi
PGBIN=$ROOT/usr/lib/postgresql/15/bin
ADMINDIR=$ROOT/var/lib/dpkg

# The target tree's payflow files: its library, bitcode, extension files,
# and the package's doc directory.
payflow_files() {
    local lib share
    lib=$("$PGBIN/pg_config" --pkglibdir) && share=$("$PGBIN/pg_config" --sharedir) || return 1
    find "$lib" -maxdepth 1 -name 'payflow*'
    find "$lib/bitcode" -maxdepth 1 -name 'payflow*' 2>/dev/null
    find "$share/extension" -maxdepth 1 -name 'payflow*'
    [ ! -e "$ROOT/usr/share/doc/$PKG" ] || echo "$ROOT/usr/share/doc/$PKG"
}
# pkg_status: dpkg's word for the package in the target's database.
pkg_status() {
    dpkg-query --admindir="$ADMINDIR" -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || echo not-installed
}
dpkg_target() {
    if [ "$MODE" = system ]; then dpkg "$@"; else dpkg --root="$ROOT" --force-depends "$@"; fi
}
# The system tree's payflow files, with sizes and times, to show the relocated
# mode leaves them alone.
system_snapshot() {
    find /usr/lib/postgresql/15/lib /usr/share/postgresql/15/extension -name 'payflow*' \
        -exec ls -ld --time-style=full-iso {} + 2>/dev/null | sort
}

echo "1..16"
echo "# target tree: $MODE ($PGBIN)"
[ "$(id -u)" = 0 ] || bail "run as root (apt-get, dpkg, clusters as postgres)"
if [ "$MODE" = system ] && [ "$(pkg_status)" != not-installed ]; then
    bail "$PKG is already installed on this system; remove it first (the test would remove it)"
fi
before_system=$(system_snapshot)

# --- build -------------------------------------------------------------------
install_build_deps() { PF_PACKAGES=$PF_DEB_PACKAGES pf_install_deps; }
check "the build dependencies are installed" install_build_deps

copy_tree() {
    mkdir "$WORK/src" || return 1
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # What the checkout holds, committed or not, without build output.
        git ls-files -z -c -o --exclude-standard |
            tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$WORK/src"
    else
        cp -a . "$WORK/src" && make -s -C "$WORK/src" clean PG_CONFIG="$SYSTEM_BIN/pg_config"
    fi
}
build() {
    copy_tree || return 1
    # Nothing of the suite's cluster or PF_PGBIN reaches the build: pg_buildext
    # builds against Debian's tree and tests in a pg_virtualenv cluster.
    (cd "$WORK/src" &&
        env -u PG_CONFIG -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE \
            dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1
    local rc=$?
    [ $rc -eq 0 ] || tail -n 40 "$WORK/build.log"
    return $rc
}
check "dpkg-buildpackage -us -uc -b builds in a copy of the tree" build
VERSION=$(cd "$WORK/src" 2>/dev/null && dpkg-parsechangelog -S Version)
DEB=$(ls "$WORK"/${PKG}_"${VERSION}"_*.deb 2>/dev/null | head -n 1)
[ -n "$DEB" ] || { ls "$WORK" | sed 's/^/#   /'; bail "no ${PKG}_${VERSION}_*.deb was built"; }
echo "# built $(basename "$DEB")"

check "the package is $PKG, version $VERSION" \
    test "$(dpkg-deb -f "$DEB" Package) $(dpkg-deb -f "$DEB" Version)" = "$PKG $VERSION"

depends_ok() {
    local deps
    deps=$(dpkg-deb -f "$DEB" Depends)
    echo "Depends: $deps"
    for want in postgresql-15 libcurl4 libssl3; do
        grep -Eq "(^|, )$want( |,|$)" <<<"$deps" || { echo "missing: $want"; return 1; }
    done
}
check "it depends on postgresql-15, libcurl4 and libssl3" depends_ok

dpkg-deb -c "$DEB" | awk '$1 ~ /^-/ { sub(/^\./, "", $6); print $6 }' | sort >"$WORK/files"
contents_ok() {
    local f missing=0
    for f in /usr/lib/postgresql/15/lib/payflow.so \
             /usr/share/postgresql/15/extension/payflow.control \
             /usr/share/postgresql/15/extension/payflow--1.0.sql \
             /usr/share/postgresql/15/extension/payflow--1.0--1.1.sql \
             $(cd sql && ls payflow--*.sql | sed 's|^|/usr/share/postgresql/15/extension/|'); do
        grep -qx "$f" "$WORK/files" || { echo "not in the package: $f"; missing=1; }
    done
    return $missing
}
check "it holds payflow.so, payflow.control and every sql/payflow--*.sql script" contents_ok
check "its payflow.control is the tree's" \
    bash -c 'dpkg-deb --fsys-tarfile "$1" | tar -xOf - ./usr/share/postgresql/15/extension/payflow.control | cmp - payflow.control' _ "$DEB"

# --- a tree where payflow was never make-installed --------------------------
prepare_tree() {
    if [ "$MODE" = system ]; then
        [ ! -e "$($SYSTEM_BIN/pg_config --pkglibdir)/payflow.so" ] || WAS_MAKE_INSTALLED=yes
        make -s uninstall PG_CONFIG="$SYSTEM_BIN/pg_config"
    else
        mkdir -p "$ROOT" && cp -a "$src_root/." "$ROOT/" &&
            make -s uninstall PG_CONFIG="$PGBIN/pg_config" &&
            mkdir -p "$ADMINDIR/info" "$ADMINDIR/updates" "$ADMINDIR/triggers" &&
            touch "$ADMINDIR/status"
    fi
    local left
    left=$(payflow_files)
    [ -z "$left" ] || { echo "left: $left"; return 1; }
}
check "no payflow file in the target tree after make uninstall" prepare_tree

install_pkg() {
    WE_INSTALLED=yes
    dpkg_target -i "$DEB" || return 1
    [ "$(pkg_status)" = installed ] || { echo "status: $(pkg_status)"; return 1; }
    if [ "$MODE" = relocated ]; then
        # dpkg --root has its own database: check the dependencies (versions
        # and Provides included) against the host's, as dpkg -i would.
        dpkg-checkbuilddeps -d "$(dpkg-deb -f "$DEB" Depends)" -c "" "$WORK/src/debian/control"
    fi
}
check "dpkg installs it, its dependencies satisfied" install_pkg

files_in_tree() {
    local f missing=0
    while read -r f; do
        [ -f "$ROOT$f" ] || { echo "not installed: $ROOT$f"; missing=1; }
    done <"$WORK/files"
    return $missing
}
check "every file of the package is in the tree" files_in_tree

# --- run it ------------------------------------------------------------------
DEFAULT_VERSION=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" payflow.control)
# One cluster on the target tree, payflow preloaded; its answers go to files.
run_cluster() (
    PF_PGBIN=$PGBIN
    pf_cluster_start "fsync = off" "shared_preload_libraries = 'payflow'" || exit 1
    q() { "$PF_PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }
    q -c "CREATE EXTENSION payflow" -c "SELECT extversion FROM pg_extension WHERE extname = 'payflow'" \
        >"$WORK/extversion" 2>&1 || exit 1
    # A checkout and its cancel: stock reserved and given back, the outbox.
    q >"$WORK/smoke" 2>&1 <<'SQL' || exit 1
INSERT INTO payflow.stock (sku, available) VALUES ('DEB-TEA', 5);
SELECT payflow.cart_put('deb-alice', 'DEB-TEA', 2, 4500, 'CNY', 'Green tea') \g /dev/null
SELECT payflow.cart_put('deb-alice', 'DEB-CUP', 1, 1200, 'CNY', 'Cup') \g /dev/null
SELECT id AS order_id FROM payflow.create_order_from_cart('deb-alice', 'deb-1') \gset
SELECT 'order ' || status || ' ' || total_amount || ' ' || currency FROM payflow.orders WHERE id = :order_id;
SELECT 'stock ' || available FROM payflow.stock WHERE sku = 'DEB-TEA';
SELECT 'cancel ' || status FROM payflow.cancel_order(:order_id, 'package smoke test');
SELECT 'stock ' || available FROM payflow.stock WHERE sku = 'DEB-TEA';
SELECT 'events ' || string_agg(type, ',' ORDER BY id) FROM payflow.events WHERE order_id = :order_id;
SQL
    # The packaged library's background worker comes up in this database.
    local i
    for i in $(seq 1 60); do
        [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'payflow reconciler'")" = 1 ] &&
            { echo up >"$WORK/worker"; break; }
        sleep 0.5
    done
)
check "a cluster on the tree preloads the packaged payflow and CREATE EXTENSION payflow works" run_cluster
check "extversion is payflow.control's default_version ($DEFAULT_VERSION)" \
    test "$(cat "$WORK/extversion" 2>/dev/null)" = "$DEFAULT_VERSION"
smoke_want="order awaiting_payment 10200 CNY
stock 3
cancel cancelled
stock 5
events order.created,order.cancelled"
check "smoke: cart_put, create_order_from_cart (stock reserved), cancel_order (stock back), events" \
    diff -u <(echo "$smoke_want") "$WORK/smoke"
check "the packaged library's worker (payflow reconciler) runs" test -s "$WORK/worker"

# --- remove it -----------------------------------------------------------------
purge_pkg() {
    dpkg_target --purge "$PKG" || return 1
    [ "$(pkg_status)" = not-installed ] || { echo "status: $(pkg_status)"; return 1; }
}
check "dpkg --purge removes it" purge_pkg

nothing_left() {
    local left f
    left=$(payflow_files)
    [ -z "$left" ] || { echo "left: $left"; return 1; }
    while read -r f; do
        [ ! -e "$ROOT$f" ] || { echo "left: $ROOT$f"; return 1; }
    done <"$WORK/files"
}
check "no payflow file is left in the tree" nothing_left

restored() {
    if [ "$MODE" = system ]; then
        [ "$WAS_MAKE_INSTALLED" = yes ] || { echo "payflow was not make-installed before: nothing to restore"; return 0; }
        make -s PG_CONFIG="$SYSTEM_BIN/pg_config" >/dev/null &&
            make -s install PG_CONFIG="$SYSTEM_BIN/pg_config" >/dev/null &&
            [ -e "$($SYSTEM_BIN/pg_config --pkglibdir)/payflow.so" ] &&
            [ -e "$($SYSTEM_BIN/pg_config --sharedir)/extension/payflow.control" ]
    else
        # The relocated tree and the system tree were only read.
        [ "$(system_snapshot)" = "$before_system" ] || { echo "the system tree's payflow files changed"; return 1; }
    fi
}
if [ "$MODE" = system ]; then
    check "make install puts payflow back in the system tree, as it was" restored
else
    check "the system tree was left alone" restored
fi

echo "deb: $((n - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
