#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs every test through CTest. GPU tests skip
# with their reason when no GPU is present. Reference data: $SKEIN_SHARED (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export SKEIN_SHARED="${SKEIN_SHARED:-$(cd .. && pwd)/shared}"
cd build
ctest --output-on-failure -j "$(nproc)"
