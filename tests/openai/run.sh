#!/usr/bin/env bash
# Starts `skein serve` on free ports, runs the openai-package tests against its HTTP API, stops it.
# Usage: run.sh SKEIN_BINARY   (the model: the tiny v5.2 checkpoint in $SKEIN_SHARED, default ../shared)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
model="${SKEIN_SHARED:-$here/../../../shared}/models/tiny-rwkv-5v2-730K.pth"
command -v node >/dev/null || { echo "node is not installed (scripts/setup.sh installs it)"; exit 1; }
[ -d "$here/node_modules/openai" ] || (cd "$here" && npm ci --no-audit --no-fund)
out=$(mktemp)
"$1" serve --model "$model" --port 0 --http-port 0 --auth-token t0k >"$out" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q 'http://' "$out" && break; sleep 0.1; done
port=$(grep -o 'http://127.0.0.1:[0-9]*' "$out" | head -1 | cut -d: -f3)
[ -n "$port" ] || { cat "$out"; exit 1; }
SKEIN_HTTP="http://127.0.0.1:$port/v1" node --test "$here/openai_client.test.mjs"
