# test/lib/cluster.sh -- sourced by test/run.sh, test/demo.sh and bench/run.sh.
#
# Installs what payflow needs on a fresh Debian 12 machine (apt-get), builds
# and installs the extension, and runs a throwaway PostgreSQL 15 cluster as
# the postgres user on a free port with a private socket directory.  The
# cluster is stopped and removed on exit, even on failure.

PF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The PostgreSQL 15 tree to build against and run: Debian's by default.  A
# relocated copy (PF_PGBIN=/opt/x/usr/lib/postgresql/15/bin) lets two
# checkouts test at once without installing over each other's payflow.so.
PF_PGBIN=${PF_PGBIN:-/usr/lib/postgresql/15/bin}
export PG_CONFIG=$PF_PGBIN/pg_config
PF_PACKAGES="make gcc libc6-dev postgresql-15 postgresql-client-15 postgresql-server-dev-15
  libcurl4-openssl-dev libssl-dev zlib1g-dev postgresql-15-pgtap pgtap postgresql-15-cron
  libmicrohttpd-dev pkg-config graphviz curl openssl jq python3 python3-cryptography python3-psycopg2 bc valgrind
  clang-14 libclang-rt-14-dev
  libzstd-dev liblz4-dev libkrb5-dev patch"

pf_log() { printf '== %s\n' "$*" >&2; }

# Install the Debian packages that are missing (apt-get update only if needed).
pf_install_deps() {
    local missing=() pkg
    for pkg in $PF_PACKAGES; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        pf_log "missing packages: ${missing[*]} (run as root so apt-get can install them)"
        return 1
    fi
    pf_log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Build with warnings as errors and install into the PostgreSQL 15 tree.
pf_build_install() {
    pf_log "building payflow"
    make -C "$PF_ROOT" -s clean >/dev/null
    make -C "$PF_ROOT" -s >/dev/null
    make -C "$PF_ROOT" -s install >/dev/null
}

pf_free_port() {
    local port
    for port in $(seq 54400 54999 | shuf); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# pf_cluster_start [extra postgresql.conf lines...]
# Exports PGHOST, PGPORT, PGUSER, PF_CLUSTER_DIR for the caller.
pf_cluster_start() {
    local bindir=$PF_PGBIN line
    PF_CLUSTER_DIR=$(mktemp -d /tmp/payflow-cluster.XXXXXX)
    chown postgres:postgres "$PF_CLUSTER_DIR"
    chmod 700 "$PF_CLUSTER_DIR"
    runuser -u postgres -- "$bindir/initdb" -D "$PF_CLUSTER_DIR/data" -U postgres \
        -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '$PF_CLUSTER_DIR'"
        echo "max_connections = 120"
        echo "log_min_messages = warning"
        for line in "$@"; do echo "$line"; done
    } >> "$PF_CLUSTER_DIR/data/postgresql.conf"
    trap pf_cluster_stop EXIT
    # Another process may take the free port first: try a few.
    local attempt
    for attempt in 1 2 3 4 5; do
        PGPORT=$(pf_free_port)
        if runuser -u postgres -- "$bindir/pg_ctl" -D "$PF_CLUSTER_DIR/data" -o "-p $PGPORT" \
            -l "$PF_CLUSTER_DIR/server.log" -w -t 60 start >/dev/null; then
            break
        fi
        [ "$attempt" = 5 ] && return 1
        pf_log "port $PGPORT was taken; trying another"
    done
    echo "port = $PGPORT" >> "$PF_CLUSTER_DIR/data/postgresql.conf"
    export PGHOST=$PF_CLUSTER_DIR PGPORT PGUSER=postgres PF_CLUSTER_DIR
    pf_log "PostgreSQL 15 running on port $PGPORT (socket in $PF_CLUSTER_DIR)"
}

pf_cluster_stop() {
    local rc=$?
    if [ -n "${PF_CLUSTER_DIR:-}" ] && [ -d "$PF_CLUSTER_DIR/data" ]; then
        runuser -u postgres -- "$PF_PGBIN/pg_ctl" -D "$PF_CLUSTER_DIR/data" \
            -m fast -w stop >/dev/null 2>&1 || true
        if [ $rc -ne 0 ] && [ -f "$PF_CLUSTER_DIR/server.log" ]; then
            pf_log "last lines of the server log:"
            tail -n 30 "$PF_CLUSTER_DIR/server.log" >&2
        fi
        rm -rf "$PF_CLUSTER_DIR"
    fi
    return $rc
}

# pf_verify_books DATABASE: payflow.verify() at the end of a benchmark.
# Prints "books: ok" with its run time, or every row it reports and a FAIL
# line; returns 1 then.
pf_verify_books() {
    local db=$1 rows start=$(date +%s%N) ms
    if ! rows=$(psql -X -q -At -F ' | ' -v ON_ERROR_STOP=1 -d "$db" -c "SELECT * FROM payflow.verify()" 2>&1); then
        echo "$rows"
        echo "FAIL: payflow.verify() did not run on $db"
        return 1
    fi
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    if [ -n "$rows" ]; then
        echo "$rows"
        echo "FAIL: payflow.verify() reports $(wc -l <<<"$rows") violations in $db (${ms} ms)"
        return 1
    fi
    echo "books: payflow.verify() reports no violation in $db (${ms} ms)"
}

# CPU time (clock ticks) used so far by the cluster: the postmaster, its
# live children, and its children that have exited (backends, autovacuum).
# The benchmarks report it per transaction: other tenants of a shared host
# disturb it less than TPS.
pf_cluster_cpu_ticks() {
    local postmaster pid ticks f
    postmaster=$(head -n 1 "$PF_CLUSTER_DIR/data/postmaster.pid")
    read -r -a f <"/proc/$postmaster/stat"
    ticks=$((f[13] + f[14] + f[15] + f[16]))
    for pid in $(pgrep -P "$postmaster"); do
        read -r -a f <"/proc/$pid/stat" 2>/dev/null && ticks=$((ticks + f[13] + f[14]))
    done
    echo "$ticks"
}
