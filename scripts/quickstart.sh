#!/usr/bin/env bash
# Quick start: installs the dependencies, builds, and runs the main job on the embedded default model
# (a small v7 checkpoint made by `skein make-model` on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
./build/skein generate --prompt "The quick brown fox" --max-tokens 80 --seed 1
