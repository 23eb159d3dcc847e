#!/usr/bin/env bash
# Deployment test: deploy/mpirun/launch.sh with a localhost hostfile runs a 3-rank eval whose figures
# equal the single process's.
# Usage: mpirun_launch.sh SKEIN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared="${SKEIN_SHARED:-$root/../shared}"
work=$(mktemp -d /tmp/skein-mpirun.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "localhost slots=3" >"$work/hosts"
# Its own usage mistakes get one line each and status 2.
for bad in "--hostfile" "--np" "--hostfile $work/hosts --np x --" "--hostfile $work/hosts --np 1 -- eval" "--hostfile $work/none -- eval" "--bogus"; do
  set +e; msg=$("$root/deploy/mpirun/launch.sh" $bad 2>&1); rc=$?; set -e
  [ "$rc" = 2 ] && [ "$(echo "$msg" | wc -l)" = 1 ] && [[ "$msg" == launch.sh:* ]] || { echo "FAIL: launch.sh $bad: status $rc, said: $msg"; exit 1; }
done
export SKEIN_BIN="$(realpath "$1")" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(eval --model "$shared/models/tiny-rwkv-7v0-834K.pth" --data "$shared/data/lambada_test.jsonl" --limit 30)
"$root/deploy/mpirun/launch.sh" --hostfile "$work/hosts" -- "${args[@]}" --output "$work/r.json" 2>&1 | tee "$work/log"
grep -q "runs stage 1" "$work/log" || { echo "FAIL: no second stage rank"; exit 1; }
want=$("$SKEIN_BIN" "${args[@]}" 2>/dev/null | head -1)
python3 - "$work/r.json" "$want" <<'PY'
import json, sys
got = json.load(open(sys.argv[1])); want = json.loads(sys.argv[2])
for k in ("n", "accuracy", "perplexity"):
    assert got[k] == want[k], (k, got[k], want[k])
print(f"PASS: launch.sh on a localhost hostfile equals the single process (ppl {got['perplexity']:.4f})")
PY
