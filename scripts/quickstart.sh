#!/usr/bin/env bash
# Quick start: installs the dependencies, builds, and runs the main job: a 3-rank pipeline (a
# coordinator and two stage ranks under mpirun) generating text with the embedded default model, a
# small v7 checkpoint made by `skein make-model` on first use (random weights: its text is noise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
flags=(--oversubscribe --bind-to none --mca mpi_yield_when_idle 1)
[ "$(id -u)" -eq 0 ] && flags+=(--allow-run-as-root)
mpirun -np 3 "${flags[@]}" ./build/skein generate --prompt "The quick brown fox" --max-tokens 80 --seed 1
