// Pieces every `skein` subcommand shares: loading a model onto the CPU backend, tokenizer choice,
// sampling flags, and strict parsing of numeric lists.
#pragma once
#include <CLI/CLI.hpp>
#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/config.h"
#include "coordinator/sampler.h"
#include "model/checkpoint.h"
#include "coordinator/model_handle.h"
#include "net/mpi_world.h"
#include "worker/engine.h"
#include "model/tokenizer.h"
#include "worker/cpu_backend.h"

namespace skein::cli {

struct LoadedModel {
  std::shared_ptr<const Checkpoint> checkpoint;
  ModelDims dims;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Engine> engine;        // the in-process engine (not on the coordinator of a cluster)
  std::unique_ptr<ModelHandle> handle;   // what commands drive; null on stage-worker ranks
  uint64_t fingerprint = 0;
};

// For 64-bit unsigned options (seeds): CLI11 would read "-3" as 2^64 - 3.
inline const CLI::Validator kWholeNumber(
    [](const std::string& v) {
      uint64_t n = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
      return !v.empty() && ec == std::errc() && end == v.data() + v.size() ? std::string() : "must be a whole number from 0 to 2^64-1, got " + v;
    },
    "");

// For flags whose absence means something (no auth token, the default address): "" is refused, since
// an unset variable in `--auth-token "$TOKEN"` would otherwise serve without a token.
inline const CLI::Validator kNonEmpty([](const std::string& v) { return v.empty() ? std::string("is empty; leave the flag out for the default") : std::string(); }, "");

// The strategy of a run that names none: "cpu <the embedding's stored dtype>".
std::string default_strategy(const Checkpoint& ck);

// Opens the checkpoint at `path` (with cfg.initial_state's tuned states merged in, if named), detects
// and prepares it (errors name the file), placed by cfg.strategy (empty: one CPU stage keeping the
// stored dtype) within cfg.limits. Under mpirun, rank 0 gets a handle on the cluster and every other
// rank runs its stage here until the coordinator shuts it down (its handle is then null: the command
// has nothing left to do).
LoadedModel load_model(const std::string& path, const Config& cfg);
// The same for a checkpoint already opened with open_checkpoint (its header read once).
LoadedModel load_model(std::shared_ptr<const Checkpoint> checkpoint, const Config& cfg);
// The checkpoint at `path` with `initial_state`'s tuned states merged in ("" for none).
std::shared_ptr<const Checkpoint> open_checkpoint(const std::string& path, const std::string& initial_state);

// The MPI world when mpirun started several ranks (set by main), else null.
MpiWorld* mpi_world();
void set_mpi_world(MpiWorld* w);
// The process the user talks to: the only one, or rank 0 of a cluster (the others run stages). What
// only it needs (a tokenizer, a state file, eval data) is checked there before the model loads, which
// for a large model in an i8 format takes minutes.
bool faces_the_user();

// The model `skein` runs when none is given: a small v7 checkpoint made by make-model into the user's
// cache folder on first use.
std::string default_model_path();

// "bytes" for vocab-256 models when spec is empty; otherwise make_tokenizer(spec).
std::unique_ptr<Tokenizer> tokenizer_for(const std::string& spec, int vocab);
// Generation stops at the tokenizer's end-of-text id unless stop tokens were given.
void stop_at_end_of_text(SamplingParams& sampling, const Tokenizer& tok);
// A JSON Schema file (--json-schema), its properties in the file's order; fails "PATH: problem" when
// it cannot be read, is not JSON, or is outside the subset Skein serves.
nlohmann::ordered_json read_json_schema_file(const std::string& path);
// The request's response_format that asks for `schema`'s texts (OpenAI's shape, strict).
nlohmann::ordered_json json_schema_format(const std::string& name, const nlohmann::ordered_json& schema);

// The flags that say which model runs and how; a --config file gives defaults and flags override it.
class RunFlags {
 public:
  // What the command reads and writes: token ids (logits, bench, plan), text (eval: --tokenizer), or
  // sampled text (generate, serve: --tokenizer and the sampling flags).
  enum Takes { kIds, kText, kSampledText };
  void add(CLI::App* app, Takes takes);
  // The effective configuration: the file's (if any), then every flag the user gave.
  Config resolve() const;

 private:
  std::string config_;
  Config flags_;  // values as parsed from the command line
  bool batch_invariant_ = false;
  bool json_ = false;
  std::string json_schema_;
  std::vector<std::pair<CLI::Option*, std::function<void(Config&)>>> overrides_;
};

void apply_threads(int threads);
void apply_run_config(const Config& cfg);  // threads and batch invariance

// "1,2,3" -> {1,2,3}; throws skein::Error naming `what` and the bad item.
std::vector<int32_t> parse_int_list(const std::string& s, const std::string& what);

// Whole-file helpers.
std::string read_all(std::istream& in);
void write_floats(const std::string& path, const std::vector<float>& v);

}  // namespace skein::cli
