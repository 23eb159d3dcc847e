#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for scripts/gpu-check.sh on a GPU machine that has CUDA, CMake and ninja
# but none of our Debian libraries and no network: the .deb files of every build dependency, and the
# reference models the GPU tests read. Run here (with the registry), then carry .gpu to the GPU machine:
#   bash scripts/gpu-bundle.sh && <device run> carry=[".gpu"] command="bash scripts/gpu-check.sh"
# (SKEIN_GPU_BASELINE="<commit> ..." bash scripts/gpu-bundle.sh adds baselines' sources: see below).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
shared="${SKEIN_SHARED:-$root/../shared}"
mkdir -p "$root/.gpu/debs" "$root/.gpu/shared/models" "$root/.gpu/shared/golden/models" "$root/.gpu/shared/tokenizers"
grep -qx '/.gpu/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >>"$root/.git/info/exclude"
cd "$root/.gpu/debs"
apt-get download -qq libdnnl-dev libdnnl2 libunistring-dev libunistring2 libtomlplusplus-dev libtomlplusplus3 nlohmann-json3-dev libcli11-dev libgtest-dev zlib1g-dev zlib1g ocl-icd-libopencl1 libnuma1 libmunge2 ibverbs-providers \
  libboost1.74-dev libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 \
  libibverbs1 libnl-3-200 libnl-route-3-200 librdmacm1 libpsm2-2 libpsm-infinipath1 2>/dev/null
# SKEIN_GPU_BASELINE="<commit> ...": those commits' trees, for gpu-check.sh to build beside ours and
# decode with on the same card (changes measured against what they replace, in one device session).
rm -rf "$root/.gpu/baseline"
for c in ${SKEIN_GPU_BASELINE:-}; do
  commit=$(git -C "$root" rev-parse --short "$c")
  mkdir -p "$root/.gpu/baseline"
  git -C "$root" archive --format=tar -o "$root/.gpu/baseline/$commit.tar" "$commit"
  echo "baseline $commit: $(du -h "$root/.gpu/baseline/$commit.tar" | cut -f1) of sources"
done
cp "$shared"/models/tiny-rwkv-*.pth "$root/.gpu/shared/models/"
cp "$shared"/golden/models/rand-v{4,5_2,6,7}-bf16.pth "$root/.gpu/shared/golden/models/"
cp "$shared"/tokenizers/rwkv_vocab_v20230424.txt "$root/.gpu/shared/tokenizers/"  # JSON mode on a World-sized head
du -sh "$root/.gpu"
