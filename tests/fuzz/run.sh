#!/usr/bin/env bash
# Runs the libFuzzer targets under AddressSanitizer and UBSan, SECONDS each (default 60):
#   bash tests/fuzz/run.sh [SECONDS] [TARGET ...]
# Builds build-fuzz/ with clang, starts every target from its seeds (tests/fuzz/seeds, configs/, tiny
# models made here, cuts of ../shared's tokenizer files) and keeps the corpus it grows in
# build-fuzz/corpus/ for the next run. Exits 1 when a target found something: the input is in
# build-fuzz/findings/TARGET/; once fixed, keep it in tests/fuzz/regressions/TARGET/ (the test suite
# replays that folder).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
shift || true
targets=("$@")
shared=${SKEIN_SHARED:-../shared}
command -v clang++ >/dev/null || { echo "tests/fuzz/run.sh: libFuzzer needs clang (apt-get install clang)" >&2; exit 2; }
build=build-fuzz

cmake -S . -B $build -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSKEIN_FUZZ=ON -DSKEIN_CUDA=OFF -DSKEIN_BUILD_TESTS=OFF >/dev/null
if [ ${#targets[@]} -gt 0 ]; then
  ninja -C $build skein $(printf 'fuzz_%s ' "${targets[@]}")
else  # every target tests/fuzz/CMakeLists.txt defines
  ninja -C $build
  targets=($(cd $build/tests/fuzz && ls fuzz_* | sed 's/^fuzz_//'))
fi

corpus=$build/corpus
for t in "${targets[@]}"; do
  mkdir -p $corpus/$t $build/findings/$t
  [ -d tests/fuzz/seeds/$t ] && cp tests/fuzz/seeds/$t/* $corpus/$t/
  [ -d tests/fuzz/regressions/$t ] && cp tests/fuzz/regressions/$t/* $corpus/$t/
done
[ -d $corpus/config_file ] && cp configs/*.toml $corpus/config_file/
if [ -d $corpus/checkpoint_file ]; then
  for arch in v4 v5.2 v6 v7; do
    heads="--head-size 16"
    [ $arch = v4 ] && heads=""  # v4 has no heads (make-model refuses the option)
    ASAN_OPTIONS=detect_leaks=0 ./$build/skein make-model --arch $arch --layers 2 --embd 32 $heads --vocab 64 --dtype fp16 \
      -o $corpus/checkpoint_file/seed-$arch.pth >/dev/null
  done
fi
[ -d $corpus/world_vocab_file ] && head -n 600 "$shared/tokenizers/rwkv_vocab_v20230424.txt" > $corpus/world_vocab_file/seed.txt
if [ -d $corpus/bpe_tokenizer_file ]; then  # the 20B tokenizer cut to its first 400 ids and the merges among them
  python3 - "$shared/tokenizers/20B_tokenizer.json" $corpus/bpe_tokenizer_file/seed.json <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
vocab = {t: i for t, i in j["model"]["vocab"].items() if i < 400}
j["model"]["vocab"] = vocab
j["model"]["merges"] = [m for m in j["model"]["merges"] if all(p in vocab for p in m.split(" ") + [m.replace(" ", "")])]
j["added_tokens"] = [a for a in j["added_tokens"] if a["id"] < 2]
json.dump(j, open(sys.argv[2], "w"))
PY
fi

found=0
for t in "${targets[@]}"; do
  echo "== $t: ${seconds}s"
  max_len=4096
  [ $t = checkpoint_file ] && max_len=200000
  [ $t = world_vocab_file ] || [ $t = bpe_tokenizer_file ] && max_len=100000
  if ! SKEIN_SHARED="$shared" ASAN_OPTIONS=detect_leaks=0 ./$build/tests/fuzz/fuzz_$t -max_total_time=$seconds -timeout=20 \
       -rss_limit_mb=4096 -max_len=$max_len -print_final_stats=1 -artifact_prefix=$build/findings/$t/ $corpus/$t 2>$build/fuzz_$t.log; then
    found=1
    echo "   FOUND: $(grep -m1 'ERROR\|uncaught\|what()' $build/fuzz_$t.log || true); inputs in $build/findings/$t/"
  fi
  grep -E 'stat::number_of_executed_units|cov: ' $build/fuzz_$t.log | tail -2 | sed 's/^/   /'
done
exit $found
