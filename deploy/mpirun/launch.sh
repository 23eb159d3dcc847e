#!/usr/bin/env bash
# Runs a skein command on a plain cluster (no scheduler) with Open MPI: rank 0 on the first host of the
# hostfile coordinates, the other ranks run the strategy's stages.
#   deploy/mpirun/launch.sh --hostfile hosts.txt [--np N] -- serve --model M --strategy "..." --listen 0.0.0.0
#   deploy/mpirun/launch.sh --hostfile hosts.txt -- eval --model M --data lambada_test.jsonl --output r.json
# N defaults to the hostfile's total slots. SKEIN_BIN picks the binary (same path on every host; default
# `skein` on PATH, else ./build/skein); SKEIN_* and OMP_* variables are passed to every rank;
# MPIRUN_ARGS adds mpirun options (e.g. "--mca btl_tcp_if_include eth0").
set -euo pipefail
hostfile="" np=""
usage() { echo "launch.sh: $1 (usage: launch.sh --hostfile FILE [--np N] -- COMMAND ARGS...)" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) [ $# -ge 2 ] || usage "--hostfile needs a FILE"; hostfile="$2"; shift 2 ;;
    --np) [ $# -ge 2 ] || usage "--np needs a number"; np="$2"; shift 2 ;;
    --) shift; break ;;
    *) usage "unknown option $1" ;;
  esac
done
[[ -z "$np" || "$np" =~ ^[0-9]+$ ]] || usage "--np takes a number of ranks, got '$np'"
[ -n "$hostfile" ] && [ -f "$hostfile" ] || { echo "launch.sh: --hostfile FILE is required (see deploy/mpirun/hostfile.example)" >&2; exit 2; }
[ $# -gt 0 ] || { echo "launch.sh: no skein command after --" >&2; exit 2; }
if [ -z "$np" ]; then
  np=$(awk '!/^[[:space:]]*(#|$)/ { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) n = substr($i, 7); s += n } END { print s }' "$hostfile")
fi
[ "$np" -ge 2 ] || { echo "launch.sh: needs at least 2 ranks (a coordinator and a stage), got $np" >&2; exit 2; }
bin="${SKEIN_BIN:-$(command -v skein || echo ./build/skein)}"
opts=(--hostfile "$hostfile" -np "$np" --map-by slot --bind-to none)
[ "$(id -u)" = 0 ] && opts+=(--allow-run-as-root)
for v in $(env | sed -n 's/^\(SKEIN_[A-Z_]*\|OMP_[A-Z_]*\)=.*/\1/p'); do opts+=(-x "$v"); done
# More ranks than cores on a host (small test clusters): waiting ranks must yield their core.
opts+=(--mca mpi_yield_when_idle 1)
# shellcheck disable=SC2206
exec mpirun "${opts[@]}" ${MPIRUN_ARGS:-} "$bin" "$@"
