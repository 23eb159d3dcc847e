#!/usr/bin/env bash
# Installs every Debian package Skein builds and tests with. Idempotent; run as root (or with sudo).
set -euo pipefail
PKGS=(
  build-essential cmake ninja-build ccache git
  libdnnl-dev                # oneDNN: CPU GEMM (JIT sgemm)
  libunistring-dev           # NFC and Unicode classes for the byte-level BPE tokenizer (RWKV-4 Pile models)
  libtomlplusplus-dev        # configuration files
  libopenmpi-dev openmpi-bin # ranks and the host-buffer transport
  libboost-dev               # Boost.Asio: the client API server
  nlohmann-json3-dev         # safetensors headers, manifests, protocol
  libcli11-dev               # command line
  zlib1g-dev                 # crc32 for zip archives
  libgtest-dev               # tests
  python3                    # one test reads make-model output with Python's zipfile + pickle
  slurmctld slurmd slurm-client munge  # the deployment tests run a single-node Slurm cluster
  curl                       # HTTP checks in the deployment tests
)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Node.js runs the HTTP API's tests with the official `openai` npm package (pinned by package-lock.json),
# and the BPE tokenizer's reference.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
root=$(cd "$(dirname "$0")/.." && pwd)
[ -d "$root/tests/openai/node_modules/openai" ] || (cd "$root/tests/openai" && npm ci --no-audit --no-fund --loglevel=error)
# Hugging Face's `tokenizers` (npm binding of its Rust library): the reference for the BPE tokenizer's tests.
[ -d "$root/tests/hf_tokenizers/node_modules/tokenizers" ] || (cd "$root/tests/hf_tokenizers" && npm ci --no-audit --no-fund --loglevel=error)
