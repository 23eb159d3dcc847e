// Test harness for the service tests: an InferenceService over the in-process engine (a tiny trained
// model), its loop on a thread, and a model handle that fails on demand as a cluster does.
#pragma once
#include <atomic>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "common/error.h"
#include "coordinator/inference_service.h"
#include "model/fingerprint.h"
#include "tests/golden_cases.h"
#include "tests/test_support.h"
#include "worker/local_model.h"

namespace skein::test {

// The in-process engine, failing on demand as a cluster does when a stage dies: its steps throw.
class BreakableModel final : public ModelHandle {
 public:
  explicit BreakableModel(ModelHandle& m) : m_(m) {}
  std::atomic<bool> broken{false};
  const ModelDims& dims() const override { return m_.dims(); }
  int open_session() override { return m_.open_session(); }
  int free_slots() const override { return m_.free_slots(); }
  int slots() const override { return m_.slots(); }
  void close_session(int session) override { m_.close_session(session); }
  int clone_session(int session) override { return m_.clone_session(session); }
  int add_start_state(const std::vector<float>& state) override { return m_.add_start_state(state); }
  void restart_session(int session, int start) override { m_.restart_session(session, start); }
  void run(int session, std::span<const int32_t> tokens, int chunk, float* logits, bool all) override {
    check(), m_.run(session, tokens, chunk, logits, all);
  }
  std::vector<float> export_state(int session) override { return m_.export_state(session); }
  void import_state(int session, const std::vector<float>& state) override { m_.import_state(session, state); }
  void set_sampling(int session, const SamplingParams& params) override { m_.set_sampling(session, params); }
  void set_penalty_free(const std::vector<uint8_t>& penalty_free) override { m_.set_penalty_free(penalty_free); }
  uint64_t submit(const std::vector<BatchEntry>& entries) override { return check(), m_.submit(entries); }
  void collect(uint64_t step, SampledToken* tokens) override { check(), m_.collect(step, tokens); }
  uint64_t submit_logits(const std::vector<LogitsEntry>& entries) override { return check(), m_.submit_logits(entries); }
  void collect_logits(uint64_t step, float* logits) override { check(), m_.collect_logits(step, logits); }
  std::vector<StageLoad> stage_load() override { return m_.stage_load(); }

 private:
  void check() const {
    if (broken) fail("stage 2 died");
  }
  ModelHandle& m_;
};

// An InferenceService over the in-process engine, its loop on a thread.
struct Service {
  explicit Service(ServiceOptions o = {}, int slots = 8, const std::string& model_name = "tiny-rwkv-5v2-730K") {
    std::string path = shared_dir() + "/models/" + model_name + ".pth";
    mut = load_for_test(path);
    local = std::make_unique<LocalModel>(*mut.model, slots);
    model = std::make_unique<BreakableModel>(*local);
    o.state_header = {mut.model->dims(), 0, mut.model->dims().n_layer, model_fingerprint(*Checkpoint::open(path))};
    service = std::make_unique<InferenceService>(*model, tok, o);
    loop = std::thread([this] {
      try {
        service->run();
      } catch (const Error&) {  // a model failure (model->broken), rethrown once every request has its error
      }
    });
  }
  ~Service() {
    service->stop();
    loop.join();
  }
  GenerationSummary generate(const std::string& prompt, int max_tokens, const std::string& session = "") {
    std::promise<GenerationSummary> done;
    ServiceRequest r;
    r.prompt = tok.encode(prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    r.session = session;
    r.on_done = [&](const GenerationSummary& s) { done.set_value(s); };
    service->submit(std::move(r));
    return done.get_future().get();
  }
  std::pair<std::vector<SessionInfo>, std::string> op(SessionOp o, const std::string& name = "", const std::string& to = "") {
    std::promise<std::pair<std::vector<SessionInfo>, std::string>> done;
    service->session_op(o, name, [&](const InferenceService::SessionOpResult& r) { done.set_value({r.sessions, r.error}); }, to);
    return done.get_future().get();
  }
  // Whether the service's gauges report every slot free once it is idle: nothing leaked. (An idle
  // service refreshes its gauges once a second.)
  bool slots_all_free() {
    while (service->running() > 0 || service->queued() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(1300));
    return service->metrics().prometheus().find("\nskein_slots_used 0\n") != std::string::npos;
  }
  std::string where(const std::string& name) {
    for (auto& i : op(SessionOp::List).first)
      if (i.name == name) return i.where;
    return "missing";
  }
  ByteTokenizer tok;
  ModelUnderTest mut;
  std::unique_ptr<LocalModel> local;
  std::unique_ptr<BreakableModel> model;
  std::unique_ptr<InferenceService> service;
  std::thread loop;
};

// Options of a service whose sessions persist in `dir`.
inline ServiceOptions persisted(const std::string& dir) {
  ServiceOptions o;
  o.sessions.dir = dir;
  o.sessions.persist = true;
  return o;
}

}  // namespace skein::test
