#!/usr/bin/env bash
# Deployment test: a single-node Slurm cluster on this machine runs deploy/slurm/eval.sbatch (the tiny
# model on 3 ranks: coordinator + 2 CPU stages, launched by srun with PMIx); the result file must hold
# the figures a single process computes. Every daemon started is stopped on exit.
# Usage: eval_on_slurm.sh SKEIN_BINARY
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shared="${SKEIN_SHARED:-$root/../shared}"
for c in slurmctld slurmd munged sbatch; do command -v $c >/dev/null || { echo "$c is not installed (scripts/setup.sh installs Slurm)"; exit 1; }; done
source "$here/single_node_slurm.sh"
work=$(mktemp -d /tmp/skein-slurm-eval.XXXXXX)
trap 'slurm_down; rm -rf "$work"' EXIT
slurm_up

export SKEIN_BIN="$(realpath "$1")" SKEIN_MODEL="$shared/models/tiny-rwkv-5v2-730K.pth" SKEIN_DATA="$shared/data/lambada_test.jsonl"
# SKEIN_TOKENIZER: the job passes --tokenizer, which skein eval once refused
export SKEIN_RESULT="$work/result.json" SKEIN_EVAL_ARGS="--limit 40 --block 10" SKEIN_TOKENIZER=bytes
job=$(sbatch --parsable --ntasks=3 --chdir="$work" "$root/deploy/slurm/eval.sbatch")
echo "submitted job $job"
for _ in $(seq 600); do
  [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
  sleep 0.2
done
log="$work/skein-eval-$job.log"
cat "$log"
[ -f "$SKEIN_RESULT" ] || { echo "FAIL: no result file"; tail -20 "$SLURM_DIR/slurmd.log"; exit 1; }
grep -q "3 ranks" "$log" || { echo "FAIL: the job did not run 3 ranks"; exit 1; }
grep -q "runs stage 1" "$log" || { echo "FAIL: no second stage rank in the log"; exit 1; }
want=$("$SKEIN_BIN" eval --model "$SKEIN_MODEL" --data "$SKEIN_DATA" --limit 40 2>/dev/null | head -1)
python3 - "$SKEIN_RESULT" "$want" <<'PY'
import json, sys
got = json.load(open(sys.argv[1])); want = json.loads(sys.argv[2])
assert got["n"] == 40, got
for k in ("accuracy", "perplexity", "model_fingerprint"):
    assert got[k] == want[k], (k, got[k], want[k])
print(f"PASS: Slurm job result equals the single process: accuracy {got['accuracy']}, ppl {got['perplexity']:.4f}")
PY
