#include "tools/cli_support.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <numeric>

#include "common/error.h"
#include "common/json_text.h"
#include "common/refuse_folder.h"
#include "coordinator/cluster_client.h"
#include "coordinator/json_schema.h"
#include "coordinator/placement.h"
#include "coordinator/strategy.h"
#include "kernels/cpu/linear.h"
#include "model/architecture.h"
#include "model/fingerprint.h"
#include "model/initial_state.h"
#include "model/make_model.h"
#include "model/weights.h"
#include "worker/backend_factory.h"
#include "worker/local_model.h"
#include "worker/stage_worker.h"

namespace skein::cli {

namespace {
MpiWorld* g_world = nullptr;
}

MpiWorld* mpi_world() { return g_world; }
void set_mpi_world(MpiWorld* w) { g_world = w; }
bool faces_the_user() { return !g_world || g_world->rank() == 0; }

std::string default_strategy(const Checkpoint& ck) { return std::string("cpu ") + dtype_name(ck.get("emb.weight").dtype); }

namespace {
// Stages bound for GPUs of this machine fail here, before a byte is loaded, when a GPU cannot hold
// what the plan says they keep (rather than running out of memory at the first request). Stages of
// one process on one GPU add up (without mpirun, node prefixes name no other host).
void check_gpus_fit(const Plan& plan, const std::vector<size_t>& stages, int slots, int tuned) {
  std::map<int, uint64_t> taken;
  for (size_t k : stages) {
    const PlanStage& st = plan.stages[k];
    if (st.segment.device.kind != DeviceSpec::Cuda) continue;
    const int dev = st.segment.device.index;
    const auto gpu = gpu_memory(dev);
    if (!gpu) continue;  // making its backend says what is missing
    const uint64_t before = taken[dev], left = gpu->free_bytes > before ? gpu->free_bytes - before : 0;
    check_stage_fits(plan, k, slots, left, before ? gpu->name + " beside the stages before it" : gpu->name, tuned);
    taken[dev] += device_bytes(st, plan.dims.n_layer, slots, tuned);
  }
}

// Cluster ranks of one host that share a GPU load side by side, each checking what is free when it
// looks: together their stages must also fit the GPU's whole memory.
void check_shared_gpu_fits(const Plan& plan, const std::vector<size_t>& stages, int slots, int tuned, const std::string& host) {
  const int dev = plan.stages[stages.front()].segment.device.index;
  const auto gpu = gpu_memory(dev);
  if (!gpu) return;
  uint64_t need = 0;
  std::string list;
  for (size_t k : stages) {
    need += device_bytes(plan.stages[k], plan.dims.n_layer, slots, tuned);
    list += (list.empty() ? "" : ", ") + std::to_string(k);
  }
  if (need <= gpu->total_bytes) return;
  char figures[96];
  std::snprintf(figures, sizeof figures, "%.2f GiB but it has %.2f GiB in all", double(need) / double(1ull << 30), double(gpu->total_bytes) / double(1ull << 30));
  fail("strategy: stages ", list, " share ", gpu->name, " on ", host, " and together need ", figures,
       "; use an i8 format, stream layers (*N+), fewer slots or another GPU");
}
}  // namespace

std::shared_ptr<const Checkpoint> open_checkpoint(const std::string& path, const std::string& initial_state) {
  auto ck = Checkpoint::open(path);
  return initial_state.empty() ? ck : attach_initial_state(*ck, initial_state);
}

LoadedModel load_model(const std::string& path, const Config& cfg) { return load_model(open_checkpoint(path, cfg.initial_state), cfg); }

LoadedModel load_model(std::shared_ptr<const Checkpoint> checkpoint, const Config& cfg) {
  const std::string& strategy = cfg.strategy;
  PlanLimits limits = cfg.plan_limits();
  LoadedModel m;
  m.checkpoint = std::move(checkpoint);
  m.dims = detect_architecture(*m.checkpoint);
  m.fingerprint = model_fingerprint(*m.checkpoint);
  m.backend = make_backend(-1);
  MpiWorld* world = mpi_world();
  if (!world) {
    // Without a strategy the whole model runs as stored on the CPU; its plan still checks the memory.
    const Plan plan = make_plan(parse_strategy(strategy.empty() ? default_strategy(*m.checkpoint) : strategy), *m.checkpoint, m.dims, limits);
    std::vector<size_t> all(plan.stages.size());
    std::iota(all.begin(), all.end(), size_t(0));
    check_gpus_fit(plan, all, limits.slots, limits.tuned_states);
    check_host_fits(plan, all, limits.slots, host_memory(), "this host", limits.tuned_states);  // node prefixes name no other host here
    const std::vector<StageSpec> stages = strategy.empty() ? Engine::whole_model(m.dims) : local_stages(plan);
    m.engine = std::make_unique<Engine>(m.checkpoint, m.dims, stages, *m.backend);
    m.handle = std::make_unique<LocalModel>(*m.engine, std::max(1, limits.slots));
    return m;
  }

  // Cluster: every rank computes the same plan and rank assignment, so a mismatch fails on every rank.
  const auto& hosts = world->hosts();
  for (size_t r = 1; r < hosts.size(); ++r) limits.known_nodes.insert(hosts[r]);
  std::string s = strategy.empty() ? default_strategy(*m.checkpoint) : strategy;
  Plan plan = make_plan(spread_over_workers(parse_strategy(s), world->size() - 1), *m.checkpoint, m.dims, limits);
  std::vector<int> ranks = assign_stage_ranks(plan, hosts);
  std::vector<StageSpec> specs = local_stages(plan);
  if (world->rank() == 0) {
    std::vector<size_t> shard;
    for (auto& sp : specs) shard.push_back(m.dims.state_floats_per_layer() * size_t(sp.last_layer - sp.first_layer));
    m.handle = std::make_unique<ClusterClient>(*world, m.dims, ranks, shard, std::max(1, limits.slots));
    world->watch(ranks);  // a stage that stops answering becomes an error within seconds
    return m;
  }
  size_t k = size_t(std::find(ranks.begin(), ranks.end(), world->rank()) - ranks.begin());
  const StageSpec& sp = specs[k];
  check_gpus_fit(plan, {k}, limits.slots, limits.tuned_states);  // on the rank that runs it: only this host knows its GPUs
  std::vector<size_t> here;  // every stage whose rank shares this host's memory
  for (size_t i = 0; i < ranks.size(); ++i)
    if (hosts[size_t(ranks[i])] == hosts[size_t(world->rank())]) here.push_back(i);
  check_host_fits(plan, here, limits.slots, host_memory(), hosts[size_t(world->rank())], limits.tuned_states);
  std::vector<size_t> same_gpu;
  for (size_t i : here)
    if (sp.cuda_device >= 0 && specs[i].cuda_device == sp.cuda_device) same_gpu.push_back(i);
  if (same_gpu.size() > 1) check_shared_gpu_fits(plan, same_gpu, limits.slots, limits.tuned_states, hosts[size_t(world->rank())]);
  // Ranks on one host share its cores.
  if (const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"); local && cpu::compute_threads() > 1)
    cpu::set_compute_threads(std::max(1, cpu::compute_threads() / std::max(1, std::atoi(local))));
  m.backend = make_backend(sp.cuda_device);
  RwkvModel stage(load_weights(m.checkpoint, m.dims, sp.first_layer, sp.last_layer, sp.embedding, sp.head, sp.format, sp.streamed), *m.backend);
  StageLinks links{0, k > 0 ? ranks[k - 1] : -1, k + 1 < ranks.size() ? ranks[k + 1] : -1};
  // GPU to GPU hops over NCCL, unless both ends name one GPU of one host (NCCL cannot pair a device with
  // itself; MPI can) or SKEIN_NCCL=0 asks for MPI everywhere.
  const char* nccl_env = std::getenv("SKEIN_NCCL");
  const bool nccl = NcclLink::available() && !(nccl_env && std::string(nccl_env) == "0");
  auto gpu_hop = [&](size_t a, size_t b) {
    return nccl && specs[a].cuda_device >= 0 && specs[b].cuda_device >= 0 &&
           !(hosts[size_t(ranks[a])] == hosts[size_t(ranks[b])] && specs[a].cuda_device == specs[b].cuda_device);
  };
  links.nccl_prev = k > 0 && gpu_hop(k - 1, k);
  links.nccl_next = k + 1 < ranks.size() && gpu_hop(k, k + 1);
  links.cuda_device = sp.cuda_device;
  std::fprintf(stderr, "skein: rank %d (%s, pid %d) runs stage %zu: layers %d-%d%s%s, %.1f MB of weights from a %.1f MB file, %d thread%s%s%s\n",
               world->rank(), hosts[size_t(world->rank())].c_str(), int(getpid()), k, sp.first_layer, sp.last_layer - 1, sp.embedding ? " + embedding" : "", sp.head ? " + head" : "",
               double(stage.weights().resident_bytes()) / 1e6, double(m.checkpoint->file_size()) / 1e6, cpu::compute_threads(), cpu::compute_threads() == 1 ? "" : "s",
               k > 0 ? (links.nccl_prev ? "; in over NCCL" : "; in over MPI") : "", k + 1 < ranks.size() ? (links.nccl_next ? "; out over NCCL" : "; out over MPI") : "");
  world->start_heartbeat();
  run_stage_worker(*world, links, stage);
  return m;
}



std::string default_model_path() {
  namespace fs = std::filesystem;
  fs::path dir;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) dir = fs::path(x) / "skein";
  else if (const char* h = std::getenv("HOME"); h && *h) dir = fs::path(h) / ".cache" / "skein";
  else dir = fs::temp_directory_path() / "skein";
  fs::create_directories(dir);
  fs::path p = dir / "default-v7-L6-C256-seed1.pth";
  if (!fs::exists(p)) {
    MakeModelOptions o;
    o.arch = Arch::V7;
    o.n_layer = 6;
    o.n_embd = 256;
    o.vocab = 256;
    o.seed = 1;
    o.dtype = DType::BF16;
    std::cerr << "skein: making the default model " << p.string() << " (v7, 6 layers, 256 embd, byte vocab)\n"
              << "skein: its weights are random, so its text is noise; pass --model for a trained checkpoint\n";
    make_model(o, p.string());
  }
  return p.string();
}

std::unique_ptr<Tokenizer> tokenizer_for(const std::string& spec, int vocab) {
  if (spec.empty()) {
    if (vocab == 256) return std::make_unique<ByteTokenizer>();
    fail("this model has a vocabulary of ", vocab, "; choose a tokenizer: --tokenizer world:PATH (World models) or bpe:PATH (20B_tokenizer.json: RWKV-4 Pile)");
  }
  auto t = make_tokenizer(spec);
  if (t->vocab_size() > vocab) fail("tokenizer '", spec, "' has ", t->vocab_size(), " ids but the model's vocabulary is ", vocab);
  return t;
}

void stop_at_end_of_text(SamplingParams& sampling, const Tokenizer& tok) {
  if (sampling.token_stop.empty() && tok.end_of_text()) sampling.token_stop = {*tok.end_of_text()};
}

void RunFlags::add(CLI::App* app, Takes takes) {
  Config& f = flags_;
  auto over = [&](CLI::Option* o, std::function<void(Config&)> apply) { overrides_.push_back({o, std::move(apply)}); };
  app->add_option("--config", config_, "TOML configuration file (flags override it)");
  over(app->add_option("--model", f.model, "checkpoint (.pth or .safetensors)"), [&f](Config& c) { c.model = f.model; });
  over(app->add_option("--strategy", f.strategy, "placement and precision, e.g. \"cpu fp32 *2 -> cpu fp32i8\" (default: cpu, stored dtype)"),
       [&f](Config& c) { c.strategy = f.strategy; });
  over(app->add_option("--initial-state", f.initial_state, "a state-tuning file (.pth or .safetensors of blocks.N.att.time_state): every sequence starts from it"),
       [&f](Config& c) { c.initial_state = f.initial_state; });
  over(app->add_option("--threads", f.threads, "compute threads (default: all cores available)")->check(CLI::Range(0, kMaxThreads)),
       [&f](Config& c) { c.threads = f.threads; });
  over(app->add_flag("--batch-invariant", batch_invariant_, "bit-identical results whether a request is batched or alone (slower prefill)"),
       [this](Config& c) { c.scheduler.batch_invariant = batch_invariant_; });
  if (takes == kIds) return;
  over(app->add_option("--tokenizer", f.tokenizer, "bytes | world:PATH | bpe:PATH (default: bytes for vocab-256 models)"), [&f](Config& c) { c.tokenizer = f.tokenizer; });
  if (takes == kText) return;
  SamplingParams& p = f.sampling;
  over(app->add_option("--max-tokens", f.max_tokens, "tokens to generate")->capture_default_str(), [&f](Config& c) { c.max_tokens = f.max_tokens; });
  over(app->add_option("--temperature", p.temperature, "0 = greedy")->capture_default_str(), [&p](Config& c) { c.sampling.temperature = p.temperature; });
  over(app->add_option("--top-p", p.top_p, "nucleus cutoff; >= 1 disables")->capture_default_str(), [&p](Config& c) { c.sampling.top_p = p.top_p; });
  over(app->add_option("--top-k", p.top_k, "0 disables")->capture_default_str(), [&p](Config& c) { c.sampling.top_k = p.top_k; });
  over(app->add_option("--alpha-presence", p.alpha_presence, "penalty for every token already generated")->capture_default_str(),
       [&p](Config& c) { c.sampling.alpha_presence = p.alpha_presence; });
  over(app->add_option("--alpha-frequency", p.alpha_frequency, "penalty per occurrence")->capture_default_str(),
       [&p](Config& c) { c.sampling.alpha_frequency = p.alpha_frequency; });
  over(app->add_option("--alpha-decay", p.alpha_decay, "occurrence counts decay per step")->capture_default_str(),
       [&p](Config& c) { c.sampling.alpha_decay = p.alpha_decay; });
  over(app->add_option("--ban", p.token_ban, "token ids never to sample")->delimiter(','), [&p](Config& c) { c.sampling.token_ban = p.token_ban; });
  over(app->add_option("--stop-token", p.token_stop, "token ids that end generation")->delimiter(','),
       [&p](Config& c) { c.sampling.token_stop = p.token_stop; });
  over(app->add_option("--stop", p.stop, "strings that end generation (repeatable)"), [&p](Config& c) { c.sampling.stop = p.stop; });
  over(app->add_option("--seed", p.seed, "random seed for reproducible sampling")->capture_default_str()->check(kWholeNumber), [&p](Config& c) { c.sampling.seed = p.seed; });
  over(app->add_flag("--json", json_, "JSON mode: the output is one JSON object, and generation ends where it closes"),
       [](Config& c) { c.sampling.format = ResponseFormat::JsonObject; });
  over(app->add_option("--json-schema", json_schema_, "JSON mode with a JSON Schema file: the output is one of its texts"),
       [this](Config& c) {
         c.sampling.format = ResponseFormat::JsonSchema;
         c.sampling.json_schema = ordered_json_text(read_json_schema_file(json_schema_));
       });
}

nlohmann::ordered_json read_json_schema_file(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot open the JSON Schema file");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto schema = nlohmann::ordered_json::parse(text, nullptr, false);  // ordered: properties come in the file's order
  if (schema.is_discarded()) fail(path, ": not valid JSON");
  try {
    JsonSchema compiled(schema);
  } catch (const Error& e) {
    fail(path, ": ", e.what());
  }
  return schema;
}

nlohmann::ordered_json json_schema_format(const std::string& name, const nlohmann::ordered_json& schema) {
  return {{"type", "json_schema"}, {"json_schema", {{"name", name}, {"strict", true}, {"schema", schema}}}};
}

Config RunFlags::resolve() const {
  Config c = config_.empty() ? Config{} : load_config(config_);
  for (auto& [opt, apply] : overrides_)
    if (opt->count() > 0) apply(c);
  // Flags meet a config file's ranges before anything loads (ids wait for the vocabulary).
  c.sampling.validate_ranges();
  if (c.max_tokens < 0) fail("max_tokens must be >= 0, got ", c.max_tokens);
  return c;
}

void apply_threads(int threads) {
  if (threads > 0) cpu::set_compute_threads(threads);
}

void apply_run_config(const Config& cfg) {
  apply_threads(cfg.threads);
  cpu::set_batch_invariant(cfg.scheduler.batch_invariant);
}

std::vector<int32_t> parse_int_list(const std::string& s, const std::string& what) {
  std::vector<int32_t> out;
  size_t i = 0;
  if (s.empty()) fail(what, ": empty list");
  while (i <= s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    std::string item = s.substr(i, j - i);
    size_t a = item.find_first_not_of(" \t"), b = item.find_last_not_of(" \t");
    item = a == std::string::npos ? "" : item.substr(a, b - a + 1);
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos)
      fail(what, ": '", item, "' at item ", out.size() + 1, " is not a non-negative integer");
    if (item.size() > 9) fail(what, ": ", item, " at item ", out.size() + 1, " is too large (at most 999999999)");
    out.push_back(int32_t(std::stol(item)));
    i = j + 1;
  }
  return out;
}

std::string read_all(std::istream& in) { return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()); }

void write_floats(const std::string& path, const std::vector<float>& v) {
  refuse_folder(path);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) fail(path, ": cannot write: ", std::strerror(errno));
  f.write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  if (!f) fail(path, ": write failed");
}

}  // namespace skein::cli
