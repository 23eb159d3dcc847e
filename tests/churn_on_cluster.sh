#!/usr/bin/env bash
# A short run of scripts/soak.py against a 3-rank cluster squeezed so that everything happens at once:
# 4 slots (requests wait and urgent ones preempt), a 1 KB host budget (evicted sessions go to disk),
# saves every 2 s, sessions expiring after 5 s. No request may be lost; the server must then drain on
# SIGTERM and exit 0, and a server started on its sessions folder must read back every session saved.
# Usage: churn_on_cluster.sh SKEIN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
shared="${SKEIN_SHARED:-$root/../shared}"
work=$(mktemp -d /tmp/skein-churn.XXXXXX)
server=
cleanup() {
  [ -n "$server" ] && kill -KILL "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cat >"$work/serve.toml" <<TOML
[scheduler]
max_slots = 4
[sessions]
dir = "$work/sessions"
host_bytes = "1KB"
persist = true
save_interval_s = 2
idle_ttl_s = 5
TOML
skein=$(realpath "$1")
serve() {  # launcher words..., then the log: starts the server, sets $server, $tcp and $http
  local log=${*: -1}
  "${@:1:$#-1}" "$skein" serve --model "$shared/models/tiny-rwkv-7v0-834K.pth" --port 0 --http-port 0 --config "$work/serve.toml" >"$log" 2>&1 &
  server=$!
  for _ in $(seq 300); do grep -q "serving" "$log" && break; sleep 0.1; done
  local line
  line=$(grep -m1 "serving" "$log") || { echo "FAIL: the server did not start"; cat "$log"; exit 1; }
  tcp=$(sed -E 's|.*tcp://([0-9.:]+).*|\1|' <<<"$line")
  http=$(sed -E 's|.*http://([0-9.:]+).*|\1|' <<<"$line")
}
serve mpirun -np 3 --oversubscribe --bind-to none --mca mpi_yield_when_idle 1 "$work/log"
python3 "$root/scripts/soak.py" --tcp "$tcp" --http "$http" --minutes 0.4 --clients 8 --sessions 12 --max-tokens 32 --every 8 --warmup 8
kill -TERM "$server"  # mpirun forwards it to every rank (and may say so in its own exit status)
wait "$server" || true
server=
grep -q "server stopped" "$work/log" || { echo "FAIL: the server did not drain on SIGTERM"; tail -20 "$work/log"; exit 1; }
saved=$(ls "$work/sessions" | grep -c '\.json$' || true)
sed -i '/idle_ttl_s/d' "$work/serve.toml"  # else sessions saved more than 5 s ago expire as it starts
serve env "$work/log2"
python3 - "http://$http/v1/sessions" "$saved" <<'PY'
import json, sys, urllib.request
listed = json.load(urllib.request.urlopen(sys.argv[1]))["data"]
assert len(listed) == int(sys.argv[2]), f"{len(listed)} sessions read back of {sys.argv[2]} saved"
PY
if grep -q "skipped" "$work/log2"; then echo "FAIL: a saved session was not read back"; grep "skipped" "$work/log2"; exit 1; fi
kill -TERM "$server"
wait "$server" || { echo "FAIL: the restarted server exited $? on SIGTERM"; exit 1; }
server=
echo "PASS: no request lost; drained on SIGTERM; all $saved saved session(s) read back"
