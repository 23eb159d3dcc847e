#!/usr/bin/env bash
# Deployment test: deploy/slurm/serve.sbatch on a single-node Slurm cluster (3 ranks) writes its
# addresses once ready, answers /health and a completion over them, and ends cleanly on scancel
# (Slurm's TERM), saving its sessions. Every daemon started is stopped on exit.
# Usage: serve_on_slurm.sh SKEIN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared="${SKEIN_SHARED:-$root/../shared}"
for c in slurmctld slurmd munged sbatch curl; do command -v $c >/dev/null || { echo "$c is not installed (scripts/setup.sh installs it)"; exit 1; }; done
source "$here/single_node_slurm.sh"
work=$(mktemp -d /tmp/skein-slurm-serve.XXXXXX)
trap 'slurm_down; rm -rf "$work"' EXIT
slurm_up

export SKEIN_BIN="$(realpath "$1")" SKEIN_MODEL="$shared/models/tiny-rwkv-5v2-730K.pth" SKEIN_LISTEN=127.0.0.1
export SKEIN_PORTS_FILE="$work/ports" SKEIN_SESSIONS_DIR="$work/sessions"
job=$(sbatch --parsable --ntasks=3 --chdir="$work" "$root/deploy/slurm/serve.sbatch")
echo "submitted job $job"
for _ in $(seq 300); do [ -f "$SKEIN_PORTS_FILE" ] && break; sleep 0.2; done
[ -f "$SKEIN_PORTS_FILE" ] || { echo "FAIL: no ports file"; cat "$work"/*.log; exit 1; }
cat "$SKEIN_PORTS_FILE"
http=$(sed -n 's/^http=//p' "$SKEIN_PORTS_FILE" | sed 's|//[^:]*:|//127.0.0.1:|')
curl -sf "$http/health" | grep -q '"ok"' || { echo "FAIL: /health"; exit 1; }
text=$(curl -sf "$http/v1/completions" -d '{"prompt": "The man said", "max_tokens": 20, "temperature": 0, "session": "kept"}')
echo "$text" | grep -q '" to a state of the s"' || { echo "FAIL: completion: $text"; exit 1; }
scancel --batch --signal=TERM "$job"
for _ in $(seq 150); do [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break; sleep 0.2; done
cat "$work/skein-serve-$job.log"
grep -q "skein: server stopped" "$work/skein-serve-$job.log" || { echo "FAIL: the server did not stop cleanly"; exit 1; }
[ -f "$SKEIN_SESSIONS_DIR/kept.state" ] || { echo "FAIL: the session was not saved on TERM"; exit 1; }
echo "PASS: serve.sbatch served, answered and shut down cleanly with its session saved"
