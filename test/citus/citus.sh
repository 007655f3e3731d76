# test/citus/citus.sh -- sourced by test/citus/run.sh and bench/citus.sh,
# after test/lib/cluster.sh.
#
# pf_citus_install: builds and installs Citus 13.2.2 from the vendored
#   archive (test/citus/vendor) into the PostgreSQL tree of PF_PGBIN when
#   that tree has no Citus or another version.  The build is kept in
#   /var/tmp/payflow-citus-build/<version>, so only the first run compiles
#   (its build dependencies are in pf_install_deps's list).
# pf_citus_start [extra postgresql.conf lines...]: a coordinator and two
#   workers on free ports of 127.0.0.1, as the postgres user, each with its
#   own data and socket directory, shared_preload_libraries = 'citus,payflow';
#   Citus created in database postgres on each and the workers registered.
#   Exports PGHOST/PGPORT/PGUSER for the coordinator, PF_CITUS_DIR,
#   PF_CITUS_PORTS (coordinator first) and PF_CITUS_HOSTS (socket dirs).
# pf_citus_stop: stops the three nodes and removes their directories; set
#   as the EXIT trap by pf_citus_start, so it runs even on failure.

PF_CITUS_VERSION=13.2.2
PF_CITUS_SHA256=dd2453caec20a830e5e63f1def5c5a98cb6f57ae510407cdcd800916fcdab430
PF_CITUS_VENDOR=$PF_ROOT/test/citus/vendor
PF_CITUS_BUILD=${PF_CITUS_BUILD:-/var/tmp/payflow-citus-build/$PF_CITUS_VERSION}

# The Citus version of the tree's citus.so, empty when it has none.  The
# library carries its version in the text citus_version() returns.
pf_citus_installed_version() {
    local so
    so="$("$PG_CONFIG" --pkglibdir)/citus.so"
    [ -f "$so" ] || return 0
    grep -aoE 'Citus [0-9]+\.[0-9]+\.[0-9]+' "$so" | head -n 1 | cut -d' ' -f2
}

pf_citus_install() {
    local have pgversion stamp
    have=$(pf_citus_installed_version)
    if [ "$have" = "$PF_CITUS_VERSION" ]; then
        pf_log "Citus $have is installed in $("$PG_CONFIG" --pkglibdir)"
        return 0
    fi
    pf_log "Citus ${have:-absent} in this tree: installing $PF_CITUS_VERSION from test/citus/vendor"
    pf_install_deps || return 1
    if ! echo "$PF_CITUS_SHA256  $PF_CITUS_VENDOR/citus-$PF_CITUS_VERSION.tar.gz" | sha256sum -c --quiet -; then
        pf_log "citus-$PF_CITUS_VERSION.tar.gz does not have the sha256 of test/citus/vendor/README.md"
        return 1
    fi
    pgversion=$("$PG_CONFIG" --version)
    stamp="$PF_CITUS_BUILD/built-for"
    mkdir -p "$PF_CITUS_BUILD"
    (
        # Two suites on one machine build the cache once, one after the other.
        flock 9
        if [ "$(cat "$stamp" 2>/dev/null)" != "$PF_CITUS_SHA256 $pgversion" ]; then
            pf_log "building Citus $PF_CITUS_VERSION in $PF_CITUS_BUILD (about 4 minutes)"
            rm -rf "$PF_CITUS_BUILD/citus-$PF_CITUS_VERSION" "$stamp"
            tar -xzf "$PF_CITUS_VENDOR/citus-$PF_CITUS_VERSION.tar.gz" -C "$PF_CITUS_BUILD" &&
            cd "$PF_CITUS_BUILD/citus-$PF_CITUS_VERSION" &&
            patch -s -p1 < "$PF_CITUS_VENDOR/citus-pg15.20.patch" &&
            ./configure -q --without-libcurl PG_CONFIG="$PG_CONFIG" > "$PF_CITUS_BUILD/build.log" 2>&1 &&
            make -j2 >> "$PF_CITUS_BUILD/build.log" 2>&1 || {
                pf_log "the Citus build failed; the end of $PF_CITUS_BUILD/build.log:"
                tail -n 30 "$PF_CITUS_BUILD/build.log" >&2
                exit 1
            }
            echo "$PF_CITUS_SHA256 $pgversion" > "$stamp"
        fi
        # Built against one tree, installed into this one: same PostgreSQL
        # version, so only the install paths differ.
        make -s -C "$PF_CITUS_BUILD/citus-$PF_CITUS_VERSION" install \
            PG_CONFIG="$PG_CONFIG" > "$PF_CITUS_BUILD/install.log" 2>&1 || {
            tail -n 30 "$PF_CITUS_BUILD/install.log" >&2
            exit 1
        }
    ) 9> "$PF_CITUS_BUILD.lock" || return 1
    have=$(pf_citus_installed_version)
    if [ "$have" != "$PF_CITUS_VERSION" ]; then
        pf_log "after the install the tree has Citus '${have}', not $PF_CITUS_VERSION"
        return 1
    fi
    pf_log "Citus $have installed in $("$PG_CONFIG" --pkglibdir)"
}

# pf_citus_sql NODE SQL...: psql as postgres on node 0 (coordinator), 1 or 2.
pf_citus_sql() {
    local node=$1; shift
    psql -X -q -At -v ON_ERROR_STOP=1 -h "${PF_CITUS_HOSTS[$node]}" -p "${PF_CITUS_PORTS[$node]}" \
        -U postgres -d postgres "$@"
}

# pf_citus_node_start NODE: start (or restart) one node on its port.
pf_citus_node_start() {
    local node=$1
    runuser -u postgres -- "$PF_PGBIN/pg_ctl" -D "$PF_CITUS_DIR/node$node/data" \
        -o "-p ${PF_CITUS_PORTS[$node]}" -l "$PF_CITUS_DIR/node$node/server.log" \
        -w -t 60 start >/dev/null
}

pf_citus_start() {
    local node line attempt
    PF_CITUS_DIR=$(mktemp -d /tmp/payflow-citus.XXXXXX)
    chown postgres:postgres "$PF_CITUS_DIR"
    chmod 700 "$PF_CITUS_DIR"
    PF_CITUS_PORTS=()
    PF_CITUS_HOSTS=()
    trap pf_citus_stop EXIT
    for node in 0 1 2; do
        runuser -u postgres -- mkdir -p "$PF_CITUS_DIR/node$node"
        PF_CITUS_HOSTS[$node]=$PF_CITUS_DIR/node$node
        runuser -u postgres -- "$PF_PGBIN/initdb" -D "$PF_CITUS_DIR/node$node/data" -U postgres \
            -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null || return 1
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "unix_socket_directories = '$PF_CITUS_DIR/node$node'"
            echo "max_connections = 200"
            echo "shared_preload_libraries = 'citus,payflow'"
            # Citus commits a transaction that wrote to two nodes in two phases.
            echo "max_prepared_transactions = 200"
            # Shard moves copy through logical replication.
            echo "wal_level = logical"
            echo "fsync = off"
            echo "log_min_messages = warning"
            # The nodes talk over 127.0.0.1 only.
            echo "citus.node_conninfo = 'sslmode=disable'"
            echo "payflow.allowed_hosts = '127.0.0.1'"
            for line in "$@"; do echo "$line"; done
        } >> "$PF_CITUS_DIR/node$node/data/postgresql.conf"
        for attempt in 1 2 3 4 5; do
            PF_CITUS_PORTS[$node]=$(pf_free_port)
            pf_citus_node_start "$node" && break
            [ "$attempt" = 5 ] && return 1
            pf_log "port ${PF_CITUS_PORTS[$node]} was taken; trying another"
        done
        echo "port = ${PF_CITUS_PORTS[$node]}" >> "$PF_CITUS_DIR/node$node/data/postgresql.conf"
        pf_citus_sql "$node" -c "CREATE EXTENSION citus" || return 1
    done
    pf_citus_sql 0 -c "SELECT citus_set_coordinator_host('127.0.0.1', ${PF_CITUS_PORTS[0]})" \
        -c "SELECT citus_add_node('127.0.0.1', ${PF_CITUS_PORTS[1]})" \
        -c "SELECT citus_add_node('127.0.0.1', ${PF_CITUS_PORTS[2]})" >/dev/null || return 1
    export PGHOST=${PF_CITUS_HOSTS[0]} PGPORT=${PF_CITUS_PORTS[0]} PGUSER=postgres PF_CITUS_DIR
    pf_log "Citus: coordinator on port ${PF_CITUS_PORTS[0]}, workers on ${PF_CITUS_PORTS[1]} and ${PF_CITUS_PORTS[2]} (in $PF_CITUS_DIR)"
}

pf_citus_stop() {
    local rc=$? node
    if [ -n "${PF_CITUS_DIR:-}" ] && [ -d "$PF_CITUS_DIR" ]; then
        for node in 0 1 2; do
            [ -d "$PF_CITUS_DIR/node$node/data" ] || continue
            runuser -u postgres -- "$PF_PGBIN/pg_ctl" -D "$PF_CITUS_DIR/node$node/data" \
                -m fast -w -t 30 stop >/dev/null 2>&1 ||
            runuser -u postgres -- "$PF_PGBIN/pg_ctl" -D "$PF_CITUS_DIR/node$node/data" \
                -m immediate -w stop >/dev/null 2>&1 || true
            if [ $rc -ne 0 ] && [ -f "$PF_CITUS_DIR/node$node/server.log" ]; then
                pf_log "last lines of node $node's server log:"
                tail -n 20 "$PF_CITUS_DIR/node$node/server.log" >&2
            fi
        done
        rm -rf "$PF_CITUS_DIR"
    fi
    return $rc
}
