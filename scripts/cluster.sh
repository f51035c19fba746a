#!/usr/bin/env bash
# A three-node confab cluster on loopback, for trying it out and for the tests:
#
#   scripts/cluster.sh start DIR    PostgreSQL (scripts/postgres.sh) and nats-server
#                                   (scripts/nats.sh) in DIR, then three `confab serve` nodes,
#                                   n1 n2 n3, on 127.0.0.1 ports 4119 4120 4121 (another base
#                                   with CONFAB_CLUSTER_PORT); prints the three URLs
#   scripts/cluster.sh stop DIR     stops the nodes (SIGTERM: each drains), NATS and PostgreSQL
#
# Each node keeps its admin token and log in DIR/nN/ (admin.token, confab.log) and its process
# id in DIR/nN/pid, so `kill -9 $(cat DIR/n2/pid)` shows what a crash does. The binary is
# $CONFAB_BIN, or target/debug/confab (built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2
base=${CONFAB_CLUSTER_PORT:-4119}
bin=${CONFAB_BIN:-target/debug/confab}

case "$cmd" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # PostgreSQL runs as an unprivileged user when this runs as root: it must reach DIR.
    chmod 755 "$dir"
    [ -x "$bin" ] || cargo build --quiet
    pg=$(scripts/postgres.sh start "$dir/pg")
    # One database for the cluster; the nodes create its schema (safe when they start together).
    db="${pg%/*}/confab"
    if ! psql "$pg" -tAc "SELECT 1 FROM pg_database WHERE datname = 'confab'" 2>/dev/null | grep -q 1; then
        psql "$pg" -qc "CREATE DATABASE confab" >/dev/null
    fi
    bus=$(scripts/nats.sh start "$dir/nats")
    for i in 1 2 3; do
        node="$dir/n$i"
        mkdir -p "$node"
        port=$((base + i - 1))
        setsid "$bin" serve --listen "127.0.0.1:$port" --data-dir "$node" --store "$db" \
            --bus "$bus" --node-id "n$i" </dev/null >"$node/stdout" 2>"$node/confab.log" &
        echo $! >"$node/pid"
    done
    # Ready when each has printed its listening line.
    for i in 1 2 3; do
        node="$dir/n$i"
        for _ in $(seq 200); do
            grep -q "^confab listening on " "$node/stdout" 2>/dev/null && break
            kill -0 "$(cat "$node/pid")" 2>/dev/null || { cat "$node/confab.log" >&2; exit 1; }
            sleep 0.05
        done
        grep -q "^confab listening on " "$node/stdout" || { echo "node n$i did not start" >&2; exit 1; }
        echo "http://$(sed -n 's/^confab listening on //p' "$node/stdout")"
    done
    ;;
stop)
    for i in 1 2 3; do
        pidfile="$dir/n$i/pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        rm -f "$pidfile"
    done
    scripts/nats.sh stop "$dir/nats"
    scripts/postgres.sh stop "$dir/pg"
    ;;
*)
    usage
    ;;
esac
