#!/usr/bin/env bash
# A throwaway NATS server for the cluster tests and scripts/cluster.sh: `scripts/nats.sh start DIR`
# runs Debian's nats-server in DIR on a free loopback port and prints its URL (also written to
# DIR/url); `scripts/nats.sh stop DIR` stops it at once (SIGKILL, as a crash would), and `start`
# on the same DIR brings it back on the same port. It listens on 127.0.0.1 only, without
# authentication, and lives as long as the run.
set -euo pipefail

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "$cmd" in
start)
    command -v nats-server >/dev/null || {
        echo "nats-server is not installed (Debian: apt-get install nats-server)" >&2
        exit 1
    }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/port" ] || free_port >"$dir/port"
    port=$(cat "$dir/port")
    if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
        echo "nats-server already runs in $dir" >&2
        exit 1
    fi
    # setsid: the server outlives this script, not the terminal's signals.
    setsid nats-server --addr 127.0.0.1 --port "$port" --pid "$dir/pid" \
        --log "$dir/nats.log" </dev/null >/dev/null 2>&1 &
    # Ready when it accepts connections (it writes its pid file before that).
    for _ in $(seq 100); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            url="nats://127.0.0.1:$port"
            echo "$url" >"$dir/url"
            echo "$url"
            exit 0
        fi
        sleep 0.05
    done
    echo "nats-server did not start; its log:" >&2
    cat "$dir/nats.log" >&2 || true
    exit 1
    ;;
stop)
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill -KILL "$pid" 2>/dev/null || true
        # Gone before returning, so a restart can take the port again.
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.02
        done
        rm -f "$dir/pid"
    fi
    ;;
*)
    usage
    ;;
esac
