// `skein bench`: prefill and decode speed of one model on this machine, next to the memory-bandwidth
// limit measured in the same run. Decode reads every matrix once per token, so tokens/s x bytes/token
// over the bandwidth is the fraction of the hardware limit achieved.
#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>

#include "bench/memory_bandwidth.h"
#include "common/error.h"
#include "common/json_text.h"
#include "kernels/cpu/linear.h"
#ifdef SKEIN_HAVE_CUDA
#include "bench/product_sweep.h"
#include "kernels/cuda/cuda_ops.h"
#endif
#include "tools/cli_support.h"
#include "tools/commands.h"
#include "worker/backend_factory.h"
#include "worker/profiling_backend.h"

namespace skein::cli {

namespace {

#ifdef SKEIN_HAVE_CUDA
// The GPU a stage runs on (its backend is named "cuda:K"), -1 for the CPU.
int cuda_device_of(const RwkvModel& stage) {
  const std::string n = stage.backend().name();
  return n.rfind("cuda:", 0) == 0 ? std::stoi(n.substr(5)) : -1;
}
#endif

// The read-bandwidth limit decode is set against: the GPU's peak (memory clock x bus width) when every
// stage runs on one GPU, else this machine's measured host read bandwidth.
std::pair<double, std::string> bandwidth_limit(const Engine& model) {
#ifdef SKEIN_HAVE_CUDA
  int dev = -1;
  bool all_gpu = true;
  for (auto& s : model.stages()) {
    const int k = cuda_device_of(*s);
    if (k < 0) all_gpu = false;
    else dev = k;
  }
  if (all_gpu && dev >= 0) {
    auto info = cuda::device_info(dev);
    return {info.peak_bandwidth_gbs, info.name + " peak (memory clock x bus width)"};
  }
#else
  (void)model;
#endif
  return {measure_read_bandwidth_gb_s(), "measured host read limit"};
}

// The rate streamed layers (*N+) come in at most: pinned host -> GPU copies, measured, when a GPU stage
// streams (the copy engine's link, PCIe or C2C), else `host`, the measured host read bandwidth (a CPU
// stage prepares its streamed layers from the mapped file at each use).
std::pair<double, std::string> streaming_limit(const Engine& model, std::pair<double, std::string> host) {
#ifdef SKEIN_HAVE_CUDA
  for (auto& s : model.stages())
    if (const int k = cuda_device_of(*s); k >= 0 && !s->weights().streamed.empty())
      return {cuda::measure_upload_gb_s(k), "measured pinned host-to-cuda:" + std::to_string(k) + " copy"};
#else
  (void)model;
#endif
  return host;
}

// --profile: each stage backend's op times over one phase of the bench, per step of that phase.
class Profile {
 public:
  explicit Profile(Engine& model) {
    for (auto& s : model.stages())
      if (auto* p = dynamic_cast<ProfilingBackend*>(&s->backend()); p && std::find(backends_.begin(), backends_.end(), p) == backends_.end())
        backends_.push_back(p);
  }
  void reset() {
    for (auto* b : backends_) b->reset();
  }
  void print(const std::string& phase, int steps) {
    for (auto* b : backends_) {
      auto ops = b->totals();
      double total = 0;
      int64_t calls = 0;
      for (auto& o : ops) total += o.seconds, calls += o.calls;
      std::printf("profile %s on %s, per step (%d steps; direct launches, no CUDA graphs):\n", phase.c_str(),
                  b->name().c_str(), steps);
      std::printf("  %-28s %8s %11s %6s %9s\n", "op", "calls", "us", "%", "GB/s");
      for (auto& o : ops) {
        std::printf("  %-28s %8.1f %11.1f %6.1f", o.op.c_str(), double(o.calls) / steps, 1e6 * o.seconds / steps, 100.0 * o.seconds / total);
        if (o.weight_bytes > 0) std::printf(" %9.1f", o.weight_bytes / o.seconds / 1e9);  // weights read per second
        std::printf("\n");
      }
      std::printf("  %-28s %8.1f %11.1f\n", "total", double(calls) / steps, 1e6 * total / steps);
    }
  }

 private:
  std::vector<ProfilingBackend*> backends_;
};

// Decode with B sequences in every step (continuous batching's steady state): tokens/s and the bytes a
// step moves (every matrix once, each sequence's state read and written).
struct BatchFigure {
  int batch;
  double tok_s, gb_s;
};
BatchFigure batched_decode(Engine& model, int B, int steps, Profile* profile) {
  using clock = std::chrono::steady_clock;
  const ModelDims& d = model.dims();
  std::vector<SessionState> states;
  std::vector<int32_t> tokens(static_cast<size_t>(B));
  for (int b = 0; b < B; ++b) {
    states.push_back(model.new_state());
    tokens[size_t(b)] = int32_t((b * 7919 + 1) % d.vocab);
  }
  // Each sequence draws its next token where the logits are (greedy), as serving does.
  std::vector<SampledToken> next(static_cast<size_t>(B));
  SampleRequest greedy;
  greedy.temperature = 0;
  std::vector<EngineSequence> seqs;
  for (int b = 0; b < B; ++b) {
    EngineSequence q{std::span<const int32_t>(&tokens[size_t(b)], 1), &states[size_t(b)], nullptr, false};
    q.sample = &greedy;
    q.token = &next[size_t(b)];
    seqs.push_back(q);
  }
  // Warm-up: the first step sizes buffers and uploads weights, the second records the step where the
  // device replays recorded steps (CUDA graphs), so the timed steps are the steady state.
  model.forward(seqs);
  model.forward(seqs);
  if (profile) profile->reset();
  auto t0 = clock::now();
  for (int s = 0; s < steps; ++s) model.forward(seqs);
  double sec = std::chrono::duration<double>(clock::now() - t0).count();
  if (profile) profile->print("decode batch " + std::to_string(B), steps);
  double bytes = double(model.matrix_bytes()) + 2.0 * double(B) * double(d.state_floats() * sizeof(float));
  return {B, double(B) * steps / sec, bytes * steps / sec / 1e9};
}

// --products: the decode product kernel at each pipeline depth the sweep runs, per shape, beside a
// plain read of the same bytes and the card's peak.
void run_product_sweep(int device) {
#ifdef SKEIN_HAVE_CUDA
  const int n = cuda::device_count();
  if (n == 0) fail("bench --products: no GPU (the CUDA runtime finds no device)");
  if (device < 0 || device >= n) fail("bench --products: --device ", device, " is not one of this machine's ", n, " GPUs");
  const cuda::DeviceInfo info = cuda::device_info(device);
  const auto rows = sweep_products(device, decode_product_shapes(), 20);
  std::printf("products on %s (cuda:%d), peak %.1f GB/s; 'read' is a plain read of the same bytes; * marks the products' depth\n",
              info.name.c_str(), device, info.peak_bandwidth_gbs);
  std::printf("  %-6s %-12s %2s  %-19s %6s %9s %9s %7s %7s %10s %s\n", "format", "rows x cols", "T", "kernel", "blk/SM", "us", "GB/s", "% peak",
              "% read", "max error", "same");
  nlohmann::json j = {{"device", info.name}, {"peak_gb_s", info.peak_bandwidth_gbs}};
  double read_gb_s = 0;
  for (const ProductSweepRow& r : rows) {
    const std::string shape = std::to_string(r.shape.rows) + "x" + std::to_string(r.shape.cols);
    if (r.kernel == "read") read_gb_s = r.gb_s;
    std::printf("  %-6s %-12s %2d %c%-19s %6d %9.1f %9.1f %7.1f %7.1f", r.shape.format.c_str(), shape.c_str(), r.shape.T, r.product ? '*' : ' ',
                r.kernel.c_str(), r.blocks_per_sm, r.us, r.gb_s, 100.0 * r.gb_s / info.peak_bandwidth_gbs, 100.0 * r.gb_s / read_gb_s);
    if (r.kernel != "read") std::printf(" %10.2e %s", r.max_error, r.same_as_product ? "yes" : "no");
    std::printf("\n");
    j["rows"].push_back({{"format", r.shape.format}, {"rows", r.shape.rows}, {"cols", r.shape.cols}, {"T", r.shape.T}, {"kernel", r.kernel},
                         {"product", r.product}, {"blocks_per_sm", r.blocks_per_sm}, {"us", r.us}, {"gb_s", r.gb_s}, {"max_error", r.max_error}, {"same_as_product", r.same_as_product}});
  }
  std::printf("%s\n", json_text(j).c_str());
#else
  (void)device;
  fail("bench --products: this build has no CUDA backend");
#endif
}

double peak_rss_mib() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}
}  // namespace

// CLI11's PositiveNumber names its range up to DBL_MAX, all 309 digits of it.
const CLI::Validator kPositiveSeconds(
    [](std::string& v) {
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      return end != v.c_str() && *end == '\0' && d > 0 && d < 1e9 ? std::string() : "must be a number of seconds > 0, got '" + v + "'";
    },
    "SECONDS");

void add_bench_command(CLI::App& app) {
  struct Opts {
    int prompt_tokens = 512, decode_tokens = 128;
    std::vector<int> batches;
    bool pipeline = false, profile = false, products = false, json = false;
    std::string json_schema;
    int device = 0;
    std::string server, tuned_state;
    int clients = 64, max_tokens = 64, samples = 1, logprobs = -1, urgent = 0;
    double duration = 60;
    RunFlags run;
  };
  auto o = std::make_shared<Opts>();
  auto* c = app.add_subcommand("bench", "Measure prefill and decode tokens/s against the memory-bandwidth limit");
  auto* prompt_tokens = c->add_option("--prompt-tokens", o->prompt_tokens, "prefill length (with --server: token prompts of this length)")
                            ->capture_default_str()
                            ->check(CLI::Range(1, 1 << 24));
  auto* decode_tokens = c->add_option("--decode-tokens", o->decode_tokens, "decode steps timed")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  auto* batches = c->add_option("--batches", o->batches, "also decode with these many sequences per step, e.g. 1,8,64,256")->delimiter(',');
  o->run.add(c, RunFlags::kIds);
  auto* profile = c->add_flag("--profile", o->profile,
                              "print each op's device time per step (prefill, decode, each batch); ops launch directly, without CUDA graphs");
  auto* pipeline = c->add_flag("--pipeline", o->pipeline, "under mpirun: tokens/s vs micro-batches in flight, stage idle time, per-hop transfer time");
  auto* products = c->add_flag("--products", o->products,
                               "no model: the decode product kernel at several pipeline depths on 7B shapes, against a plain read and the GPU's peak");
  c->add_option("--device", o->device, "with --products: the GPU")->capture_default_str()->needs(products);
  auto* server = c->add_option("--server", o->server, "HOST:PORT of a running `skein serve`: load-test it with streaming clients");
  // The load test's own flags need --server, and the model run's are refused beside it: either would
  // otherwise be ignored without a word.
  const std::vector<CLI::Option*> load_test = {
      c->add_option("--clients", o->clients, "with --server: concurrent clients")->capture_default_str()->check(CLI::Range(1, 1 << 16)),
      c->add_option("--duration", o->duration, "with --server: seconds of load")->capture_default_str()->check(kPositiveSeconds),
      c->add_option("--max-tokens", o->max_tokens, "with --server: tokens per request")->capture_default_str()->check(CLI::Range(1, 1 << 24)),
      c->add_option("--samples", o->samples, "with --server: samples of each prompt (n), prefilled once")->capture_default_str()->check(CLI::Range(1, 16)),
      c->add_option("--logprobs", o->logprobs, "with --server: every request asks for log-probabilities with this many alternatives")
          ->check(CLI::Range(0, kMaxLogprobs)),
      c->add_option("--tuned-state", o->tuned_state, "with --server: every request starts from this tuned state (its \"model\")"),
      c->add_option("--urgent", o->urgent, "with --server: this many of the clients send priority -1 (before the others, preempting them)")
          ->check(CLI::Range(0, 1 << 20)),
      c->add_flag("--json", o->json, "with --server: every request asks for JSON mode, and every reply that closes its object must parse"),
      c->add_option("--json-schema", o->json_schema, "with --server: every request asks for this JSON Schema file's texts, and every closed reply must be one")
          ->excludes("--json")};
  for (CLI::Option* flag : load_test) flag->needs(server);
  for (CLI::Option* flag : {decode_tokens, batches, profile, pipeline, products}) flag->excludes(server);
  c->callback([o, prompt_tokens] {
    using clock = std::chrono::steady_clock;
    if (!o->server.empty())
      return run_server_bench({o->server, o->clients, o->duration, o->max_tokens, o->samples, prompt_tokens->count() ? o->prompt_tokens : 0, o->logprobs,
                               o->tuned_state, o->json || !o->json_schema.empty(), o->json_schema, o->urgent});
    if (o->products) return run_product_sweep(o->device);
    Config cfg = o->run.resolve();
    if (cfg.model.empty()) fail("bench: no model given (--model or [model] path in --config)");
    apply_run_config(cfg);
    if (o->pipeline) {
      run_pipeline_bench(cfg, std::max(4, o->decode_tokens / 8));
      return;
    }
    if (mpi_world()) fail("bench: without --pipeline it measures one process; run it without mpirun");
    // The states it holds at once (batch 1's and the largest batch's) are checked against memory at load.
    int largest = 0;
    for (int B : o->batches) {
      if (B < 1) fail("--batches: batch sizes must be >= 1");
      largest = std::max(largest, B);
    }
    cfg.limits.slots = 1 + largest;
    // Its steps: the whole prompt in one call, or the largest batch.
    cfg.scheduler.micro_batch_tokens = std::max({1, largest, o->prompt_tokens});
    set_backend_profiling(o->profile);
    LoadedModel m = load_model(cfg.model, cfg);
    Engine& model = *m.engine;
    std::optional<Profile> profile;
    if (o->profile) profile.emplace(model);
    const ModelDims& d = model.dims();
    std::mt19937 rng(42);
    std::vector<int32_t> prompt(size_t(std::max(1, o->prompt_tokens)));
    for (auto& t : prompt) t = int32_t(rng() % uint32_t(d.vocab));
    std::vector<float> logits(static_cast<size_t>(d.vocab));

    // Warm-up: touch every weight page and size the scratch buffers.
    {
      SessionState s = model.new_state();
      model.forward(std::span<const int32_t>(prompt.data(), std::min<size_t>(prompt.size(), 16)), s, logits.data());
      model.forward(std::span<const int32_t>(prompt.data(), 1), s, logits.data());
    }
    double prefill_s = 1e30;
    SessionState state = model.new_state();
    if (profile) profile->reset();
    for (int rep = 0; rep < 2; ++rep) {
      model.reset(state);
      auto t0 = clock::now();
      model.forward(prompt, state, logits.data());
      prefill_s = std::min(prefill_s, std::chrono::duration<double>(clock::now() - t0).count());
    }
    if (profile) profile->print("prefill (" + std::to_string(prompt.size()) + " tokens)", 2);
    // Decode in rounds of 32 steps. The bandwidth probe reports its best pass, so the decode figure set
    // against it is the best round too; the median round is printed beside it.
    // Greedy tokens drawn on the model's last device, fed back: the serving loop's decode step.
    SampledToken tok{0};
    SampleRequest greedy;
    greedy.temperature = 0;
    std::vector<double> rounds;
    if (profile) profile->reset();
    for (int done = 0; done < o->decode_tokens;) {
      int n = std::min(32, o->decode_tokens - done);
      auto t1 = clock::now();
      for (int i = 0; i < n; ++i) {
        int32_t in = tok.token;
        EngineSequence q{std::span<const int32_t>(&in, 1), &state, nullptr, false};
        q.sample = &greedy;
        q.token = &tok;
        model.forward(std::span<const EngineSequence>(&q, 1));
      }
      rounds.push_back(double(n) / std::chrono::duration<double>(clock::now() - t1).count());
      done += n;
    }
    if (profile) profile->print("decode batch 1", o->decode_tokens);
    std::sort(rounds.begin(), rounds.end());
    const double decode_best = rounds.back(), decode_median = rounds[rounds.size() / 2];
    std::vector<BatchFigure> batch_figures;
    for (int B : o->batches)
      batch_figures.push_back(batched_decode(model, B, std::max(4, o->decode_tokens / 4), profile ? &*profile : nullptr));
    // After the batches (their states count: what a server of that many slots holds), before the
    // bandwidth probe allocates its 1 GiB buffer.
    const double rss_mib = peak_rss_mib();
    auto [bw, bw_what] = bandwidth_limit(model);

    const ModelWeights& first = model.stages().front()->weights();
    // Bytes one decode step must move: every matrix (head included), one embedding row, and the state
    // read and written once.
    double bytes_per_token = double(model.matrix_bytes()) + double(d.n_embd) * double(dtype_size(first.emb.dtype)) +
                             2.0 * double(d.state_floats() * sizeof(float));
    double prefill_tps = double(prompt.size()) / prefill_s;
    double achieved = decode_best * bytes_per_token / 1e9;
    if (profile) std::printf("note             --profile: the figures below are of profiled steps (timed op by op, no CUDA graphs)\n");
    std::printf("model            %s (%s, L%d C%d vocab %d, stored %s, strategy \"%s\")\n", cfg.model.c_str(), arch_name(d.arch),
                d.n_layer, d.n_embd, d.vocab, dtype_name(first.emb.dtype), cfg.strategy.empty() ? "cpu, stored dtype" : cfg.strategy.c_str());
    std::printf("weights          %.1f MB resident\n", double(model.resident_bytes()) / 1e6);
    std::printf("threads          %d (%s kernels)\n", cpu::compute_threads(), cpu::simd_level());
    std::printf("prefill          %.1f tokens/s (%zu-token prompt in one call)\n", prefill_tps, prompt.size());
    std::printf("decode           %.2f tokens/s best round, %.2f median (batch 1, %d steps in rounds of 32)\n", decode_best,
                decode_median, o->decode_tokens);
    std::printf("bytes/token      %.1f MB (matrices %.1f MB + embedding row + state %.2f MB x2)\n", bytes_per_token / 1e6,
                double(model.matrix_bytes()) / 1e6, double(d.state_floats() * sizeof(float)) / 1e6);
    std::printf("bandwidth        %.2f GB/s %s; decode moves %.2f GB/s = %.1f%% of it\n", bw, bw_what.c_str(), achieved,
                100.0 * achieved / bw);
    // Streamed layers are not in bytes/token (they do not stay in device memory): each step brings
    // them in again over the host link, which bounds such a plan's decode.
    const double streamed = double(model.streamed_bytes()), brought = decode_best * streamed / 1e9;
    std::pair<double, std::string> link;
    if (streamed > 0) {
      link = streaming_limit(model, {bw, bw_what});
      std::printf("streamed         %.1f MB/token from host memory; decode brings in %.2f GB/s = %.1f%% of %.2f GB/s %s\n",
                  streamed / 1e6, brought, 100.0 * brought / link.first, link.first, link.second.c_str());
    }
    for (auto& f : batch_figures)
      std::printf("decode batch %-4d %.1f tokens/s, %.2f GB/s = %.1f%% of the limit\n", f.batch, f.tok_s, f.gb_s, 100.0 * f.gb_s / bw);
    std::printf("peak RSS         %.1f MiB (model run, every batch included; before the bandwidth probe)\n", rss_mib);
    nlohmann::json j = {{"model", cfg.model},
                        {"arch", arch_name(d.arch)},
                        {"strategy", cfg.strategy},
                        {"resident_weight_bytes", model.resident_bytes()},
                        {"threads", cpu::compute_threads()},
                        {"prefill_tokens", prompt.size()},
                        {"prefill_tok_s", prefill_tps},
                        {"decode_tok_s", decode_best},
                        {"decode_tok_s_median", decode_median},
                        {"bytes_per_token", bytes_per_token},
                        {"state_bytes_per_request", d.state_floats() * sizeof(float)},
                        {"peak_rss_mib", rss_mib},
                        {"bandwidth_gb_s", bw},
                        {"decode_gb_s", achieved},
                        {"decode_fraction_of_limit", achieved / bw},
                        {"bandwidth_limit", bw_what}};
    if (streamed > 0) {
      j["streamed_bytes_per_token"] = streamed;
      j["streamed_gb_s"] = brought;
      j["streaming_limit_gb_s"] = link.first;
      j["streaming_limit"] = link.second;
    }
    for (auto& f : batch_figures) j["decode_batches"].push_back({{"batch", f.batch}, {"tok_s", f.tok_s}, {"gb_s", f.gb_s}});
    std::cout << json_text(j) << std::endl;
  });
}

}  // namespace skein::cli
