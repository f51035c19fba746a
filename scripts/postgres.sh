#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: `scripts/postgres.sh start DIR` runs initdb and
# postgres in DIR on a free loopback port and prints the URL (also written to DIR/url);
# `scripts/postgres.sh stop DIR` stops it as abruptly as a crash, and `start` on the same DIR brings
# the same cluster back on the same port. Tests give each case its own database on it.
#
# initdb refuses to run as root, so as root the cluster belongs to the `postgres` user that
# Debian's package creates (or `nobody`); otherwise to the caller. Authentication is `trust` on
# loopback only: the server listens on 127.0.0.1 and nowhere else, and lives as long as the run.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

bindir() {
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
        return
    fi
    # Debian installs the server binaries outside PATH.
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$found" ] || { echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2; exit 1; }
    echo "$found"
}

# Runs a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        local user=postgres
        getent passwd postgres >/dev/null || user=nobody
        # runuser keeps the environment small and needs no password.
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    bin=$(bindir)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then
        user=postgres
        getent passwd postgres >/dev/null || user=nobody
        chown "$user" "$dir"
    fi
    if [ ! -d "$dir/data" ]; then
        as_owner "$bin/initdb" --pgdata="$dir/data" --username=confab --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
        free_port >"$dir/port"
    fi
    port=$(cat "$dir/port")
    # Sized for the test suite: many small databases and a few hundred connections. A commit
    # still waits for its WAL write (synchronous_commit=on), so it survives the server process
    # dying, but not for an fsync: the data dies with the run. That is the durability SQLite has
    # with WAL and synchronous=NORMAL (SPEC §4).
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/postgres.log" --wait --silent \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
            -c max_connections=400 -c fsync=off -c full_page_writes=off \
            -c shared_buffers=64MB" start \
        || { cat "$dir/postgres.log" >&2; exit 1; }
    url="postgres://confab@127.0.0.1:$port/postgres"
    echo "$url" >"$dir/url"
    echo "$url"
    ;;
stop)
    bin=$(bindir)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=immediate --wait --silent stop || true
    fi
    ;;
*)
    usage
    ;;
esac
