// `skein bench --pipeline` under mpirun: decode tokens/s against the number of micro-batches in flight,
// each stage's measured idle fraction beside the model (S-1)/(M+S-1), and the time one activation
// message of 1, 16 and 256 tokens takes for one hop.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/error.h"
#include "coordinator/cluster_client.h"
#include "tools/cli_support.h"
#include "tools/commands.h"

namespace skein::cli {

void run_pipeline_bench(const Config& cfg, int rounds) {
  LoadedModel m = load_model(cfg.model, cfg);
  if (!m.handle) return;  // a stage rank
  auto* cc = dynamic_cast<ClusterClient*>(m.handle.get());
  if (!cc) fail("bench --pipeline: run it under mpirun with at least 2 ranks");
  const ModelDims& d = m.dims;
  const int S = int(cc->stages());
  const size_t V = size_t(d.vocab);
  std::vector<int> counts = {1, 2, S, 2 * S, 4 * S};
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  const int max_m = counts.back();

  std::mt19937 rng(7);
  std::vector<int> sessions;
  std::vector<int32_t> next(static_cast<size_t>(max_m));
  std::vector<float> logits(V * static_cast<size_t>(max_m));
  for (int i = 0; i < max_m; ++i) {
    sessions.push_back(cc->open_session());
    std::vector<int32_t> prompt(16);
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(d.vocab));
    cc->run(sessions.back(), prompt, 16, logits.data(), false);
    next[size_t(i)] = int32_t(std::max_element(logits.begin(), logits.begin() + long(V)) - logits.begin());
  }
  auto argmax = [&](const float* l) { return int32_t(std::max_element(l, l + V) - l); };

  nlohmann::json runs = nlohmann::json::array();
  std::printf("pipeline: %d stages, %s, L%d C%d; decode with M micro-batches of one request each in flight\n", S, arch_name(d.arch), d.n_layer,
              d.n_embd);
  std::printf("%4s %12s %14s %14s %16s\n", "M", "tokens/s", "idle measured", "idle model", "batched tokens/s");
  for (int M : counts) {
    auto round = [&] {  // M micro-batches in flight, then their tokens
      std::vector<uint64_t> ids;
      for (int i = 0; i < M; ++i) ids.push_back(cc->submit_step({{sessions[size_t(i)], {next[size_t(i)]}, Want::Last}}));
      for (int i = 0; i < M; ++i) {
        cc->collect(ids[size_t(i)], logits.data());
        next[size_t(i)] = argmax(logits.data());
      }
    };
    round();
    cc->stage_stats();
    auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r) round();
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    auto stats = cc->stage_stats();
    double idle = 0;
    for (auto& s : stats) idle += s.wall_seconds > 0 ? 1.0 - s.busy_seconds / s.wall_seconds : 0;
    idle /= double(stats.size());
    // The same M requests as one micro-batch of batch M, for comparison.
    auto t1 = std::chrono::steady_clock::now();
    for (int r = 0; r < rounds; ++r) {
      std::vector<ClusterClient::Entry> batch;
      for (int i = 0; i < M; ++i) batch.push_back({sessions[size_t(i)], {next[size_t(i)]}, Want::Last});
      cc->collect(cc->submit_step(batch), logits.data());
      for (int i = 0; i < M; ++i) next[size_t(i)] = argmax(logits.data() + size_t(i) * V);
    }
    double bsecs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    double tps = double(M) * rounds / secs, btps = double(M) * rounds / bsecs, model = double(S - 1) / double(M + S - 1);
    std::printf("%4d %12.1f %13.1f%% %13.1f%% %16.1f\n", M, tps, 100 * idle, 100 * model, btps);
    runs.push_back({{"micro_batches", M}, {"tokens_per_s", tps}, {"idle_measured", idle}, {"idle_model", model}, {"batched_tokens_per_s", btps}});
  }
  // Activation hops: rank 0 to the first stage (MPI, as step plans and tokens go), and every stage to
  // the next over the link their activations use (NCCL between GPU stages, else MPI host buffers).
  nlohmann::json hops = nlohmann::json::array();
  const size_t per_token = size_t(d.n_embd) * sizeof(float) * (d.arch == Arch::V7 ? 2 : 1);
  auto report = [&](const std::string& hop, const char* via, int tokens, double one_way) {
    size_t bytes = per_token * size_t(tokens);
    std::printf("hop %-16s %-4s %3d-token activation message (%zu bytes): %.1f us one way, %.2f GB/s\n", hop.c_str(), via, tokens, bytes,
                one_way * 1e6, double(bytes) / one_way / 1e9);
    hops.push_back({{"hop", hop}, {"via", via}, {"tokens", tokens}, {"bytes", bytes}, {"one_way_us", one_way * 1e6}});
  };
  for (int tokens : {1, 16, 256}) {
    double best = 1e30;
    for (int rep = 0; rep < 50; ++rep) best = std::min(best, cc->echo_seconds(0, per_token * size_t(tokens)));
    report("coordinator-s0", "MPI", tokens, best / 2);
  }
  for (size_t k = 0; k + 1 < size_t(S); ++k)
    for (int tokens : {1, 16, 256}) {
      HopResult r = cc->hop_round_trip(k, per_token * size_t(tokens) / sizeof(float), 50);
      report("s" + std::to_string(k) + "-s" + std::to_string(k + 1), r.nccl ? "NCCL" : "MPI", tokens, r.best_round_trip_seconds / 2);
    }
  for (int s : sessions) cc->close_session(s);
  std::cout << nlohmann::json{{"stages", S}, {"arch", arch_name(d.arch)}, {"runs", runs}, {"hops", hops}}.dump() << std::endl;
}

}  // namespace skein::cli
