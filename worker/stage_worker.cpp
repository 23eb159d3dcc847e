#include "worker/stage_worker.h"

#include <algorithm>
#include <chrono>
#include <map>

#include "common/error.h"
#include "common/process_stats.h"
#include "coordinator/sampler.h"
#include "net/stage_protocol.h"

namespace skein {

void run_stage_worker(MpiWorld& world, const StageLinks& links, RwkvModel& stage) {
  Backend& be = stage.backend();
  const ModelDims& d = stage.dims();
  const size_t C = size_t(d.n_embd), V = size_t(d.vocab);
  const bool v7 = d.arch == Arch::V7, first = links.prev < 0, last = links.next < 0;
  std::map<int, State> slots;
  std::vector<State> start_states;  // tuned states a slot may start from (ResetSlot's slot2)
  SlotSamplers samplers;  // last stage: each session's sampling state
  std::vector<float> host;  // activations received: x, then v_first for v7
  // Outgoing activations are sent without blocking, from two alternating buffers, so this stage starts
  // its next step while the next stage is still busy with the last one.
  std::vector<float> out[2];
  MpiWorld::Pending out_pending[2];
  int out_i = 0;
  DeviceBuffer x, v_first;

  // NCCL links come up pairwise along the chain: the one from the previous stage first, then the one
  // to the next (which that stage makes first), so no two ranks wait on each other.
  std::unique_ptr<NcclLink> from_prev, to_next;
  if (links.nccl_prev) from_prev = std::make_unique<NcclLink>(world, links.prev, false, links.cuda_device);
  if (links.nccl_next) to_next = std::make_unique<NcclLink>(world, links.next, true, links.cuda_device);

  using clock = std::chrono::steady_clock;
  StageStats stats;
  auto since = clock::now();

  auto slot = [&](int id) -> State& {
    auto it = slots.find(id);
    if (it == slots.end()) fail("stage worker: slot ", id, " is not open");
    return it->second;
  };

  while (true) {
    ControlMessage m = ControlMessage::decode(world.recv(links.coordinator, kTagControl));
    switch (m.op) {
      case StageOp::Shutdown:
        for (auto& p : out_pending) world.wait(p);
        return;
      case StageOp::ResetSlot: {
        if (m.slot2 > 0) {
          if (size_t(m.slot2) > start_states.size()) fail("stage worker: no start state ", m.slot2);
          slots.insert_or_assign(m.slot, start_states[size_t(m.slot2 - 1)].clone());
          break;
        }
        auto it = slots.find(m.slot);
        if (it == slots.end()) slots.emplace(m.slot, stage.new_state());
        else stage.reset(it->second);
        break;
      }
      case StageOp::AddStartState:
        start_states.push_back(stage.new_state());
        start_states.back().from_host(m.state);
        break;
      case StageOp::FreeSlot:
        slots.erase(m.slot);
        samplers.erase(m.slot);
        break;
      case StageOp::SetSampling:
        samplers.set(m.slot, decode_sampling(m.blob));
        break;
      case StageOp::SetPenaltyFree:
        samplers.set_penalty_free(std::vector<uint8_t>(m.blob.begin(), m.blob.end()));
        break;
      case StageOp::CloneSlot:
        slots.insert_or_assign(m.slot2, slot(m.slot).clone());
        break;
      case StageOp::ExportSlot: {
        auto h = slot(m.slot).to_host();
        world.send(links.coordinator, kTagReply, h.data(), h.size() * sizeof(float));
        break;
      }
      case StageOp::ImportSlot: {
        auto it = slots.find(m.slot);
        if (it == slots.end()) it = slots.emplace(m.slot, stage.new_state()).first;
        it->second.from_host(m.state);
        break;
      }
      case StageOp::Stats: {
        stats.wall_seconds = std::chrono::duration<double>(clock::now() - since).count();
        stats.resident_bytes = resident_bytes();
        world.send(links.coordinator, kTagReply, &stats, sizeof stats);
        stats = {};
        since = clock::now();
        break;
      }
      case StageOp::Echo: {  // measures one hop: the payload comes back as it came
        std::string payload = world.recv(links.coordinator, kTagActivations);
        world.send(links.coordinator, kTagActivations, payload);
        break;
      }
      case StageOp::HopProbe: {  // round trips with a neighbour over the activations' link
        const bool out = m.blob == "out";
        const int peer = out ? links.next : links.prev;
        if (peer < 0 || m.slot < 0 || m.slot2 <= 0) fail("stage worker: a hop probe needs a neighbour, a size and a count");
        NcclLink* link = out ? to_next.get() : from_prev.get();
        const size_t n = size_t(m.slot);
        HopResult r;
        r.best_round_trip_seconds = 1e30;
        r.nccl = link != nullptr;
        DeviceBuffer dev;
        std::vector<float> buf(n);
        if (link) dev = DeviceBuffer(be, std::max<size_t>(n, 1));
        for (int rep = 0; rep < m.slot2; ++rep) {
          auto t0 = clock::now();
          if (link && out) link->round_trip(dev.get(), n);
          else if (link) link->answer(dev.get(), n);
          else if (out) {
            world.send(peer, kTagActivations, buf.data(), n * sizeof(float));
            world.recv_into(peer, kTagActivations, buf.data(), n * sizeof(float));
          } else {
            world.recv_into(peer, kTagActivations, buf.data(), n * sizeof(float));
            world.send(peer, kTagActivations, buf.data(), n * sizeof(float));
          }
          r.best_round_trip_seconds = std::min(r.best_round_trip_seconds, std::chrono::duration<double>(clock::now() - t0).count());
        }
        if (out) world.send(links.coordinator, kTagReply, &r, sizeof r);
        break;
      }
      case StageOp::Step: {
        auto busy_from = clock::now();
        int R = 0;
        for (auto& e : m.entries) R += e.n_tokens;
        if (R == 0) break;
        const size_t rc = size_t(R) * C, parts = v7 ? 2 : 1;
        if (x.size() < rc) {
          x = DeviceBuffer(be, rc);
          if (v7) v_first = DeviceBuffer(be, rc);
        }
        host.resize(rc * parts);
        if (first) {
          if (m.tokens.size() != size_t(R)) fail("stage worker: step has ", m.tokens.size(), " tokens for ", R, " rows");
          for (int32_t t : m.tokens)
            if (t < 0 || t >= d.vocab) fail("token id ", t, " is out of range for vocabulary size ", d.vocab);
          stage.embed(m.tokens, x.get());
        } else if (from_prev) {  // device to device; the layers below queue behind the receive
          if (v7) from_prev->recv({x.get(), v_first.get()}, rc);
          else from_prev->recv({x.get()}, rc);
        } else {
          world.recv_into(links.prev, kTagActivations, host.data(), host.size() * sizeof(float));
          be.to_device(x.get(), host.data(), rc);
          if (v7) be.to_device(v_first.get(), host.data() + rc, rc);
        }
        std::vector<StageSequence> seqs;
        for (auto& e : m.entries) seqs.push_back({e.n_tokens, &slot(e.slot)});
        if (!first) busy_from = clock::now();  // waiting for the previous stage is idle time
        stage.run_layers(x.get(), v_first.get(), seqs, R);
        ++stats.steps;
        struct Busy {  // counts compute time however this step ends
          StageStats& s;
          clock::time_point t;
          ~Busy() { s.busy_seconds += std::chrono::duration<double>(clock::now() - t).count(); }
        } busy{stats, busy_from};
        if (to_next) {
          if (v7) to_next->send({x.get(), v_first.get()}, rc);
          else to_next->send({x.get()}, rc);
          break;
        }
        if (!last) {
          out_i ^= 1;
          world.wait(out_pending[out_i]);  // the send from two steps ago has left this buffer
          std::vector<float>& o = out[out_i];
          o.resize(rc * parts);
          be.to_host(o.data(), x.get(), rc);
          if (v7) be.to_host(o.data() + rc, v_first.get(), rc);
          out_pending[out_i] = world.isend(links.next, kTagActivations, o.data(), o.size() * sizeof(float));
          break;
        }
        // Logits for the entries that want them back, or the sampled tokens and scored positions (one
        // message either way).
        std::vector<int> rows, score_rows, tops;
        std::vector<int> sample_slots;
        std::vector<const uint64_t*> allowed;  // per sampling entry: its mask, or null
        const size_t words = (V + 63) / 64;
        size_t masks = 0;
        int off = 0;
        for (auto& e : m.entries) {
          if (e.constrained && (e.want != Want::Sample || (masks + 1) * words > m.allowed.size()))
            fail("stage worker: a constrained entry without its allowed tokens (", m.allowed.size(), " words for ", masks + 1, " masks)");
          if (e.want == Want::All)
            for (int t = 0; t < e.n_tokens; ++t) rows.push_back(off + t);
          else if ((e.want == Want::Last || e.want == Want::Sample) && e.n_tokens > 0)
            rows.push_back(off + e.n_tokens - 1);
          if (e.want == Want::Sample) {
            sample_slots.push_back(e.slot);
            allowed.push_back(e.constrained ? m.allowed.data() + words * masks++ : nullptr);
          }
          if (e.scored < 0 || e.scored > e.n_tokens || e.top < 0 || e.top > kMaxLogprobs)
            fail("stage worker: an entry of ", e.n_tokens, " tokens asks to score ", e.scored, " with ", e.top, " alternatives");
          for (int t = 0; t < e.scored; ++t) {
            score_rows.push_back(off + t);
            tops.push_back(e.top);
          }
          off += e.n_tokens;
        }
        if (masks * words != m.allowed.size()) fail("stage worker: ", m.allowed.size(), " allowed-token words for ", masks, " masks of ", words);
        if (score_rows.size() != m.targets.size()) fail("stage worker: ", m.targets.size(), " targets for ", score_rows.size(), " scored positions");
        for (int32_t t : m.targets)
          if (t < 0 || t >= d.vocab) fail("token id ", t, " is out of range for vocabulary size ", d.vocab);
        if (rows.empty() && score_rows.empty()) break;
        if (sample_slots.size() < rows.size()) {
          if (!sample_slots.empty() || !score_rows.empty()) fail("stage worker: a step may not mix logits with sampling or scoring entries");
          std::vector<float> logits(rows.size() * V);
          stage.head(x.get(), rows, logits.data());
          world.send(links.coordinator, kTagResult, logits.data(), logits.size() * sizeof(float));
          break;
        }
        // Sampled where the logits are (on a GPU stage, on the GPU): only token ids travel (with the
        // log-probabilities of the requests that ask for them), then the scored positions.
        std::vector<SampleRequest> requests = samplers.prepare(sample_slots, allowed, d.vocab);
        std::vector<SampledToken> tokens(rows.size() + score_rows.size());
        if (!rows.empty()) stage.head_sample(x.get(), rows, requests, tokens.data());
        samplers.record(sample_slots, tokens);
        if (!score_rows.empty()) stage.head_score(x.get(), score_rows, m.targets, tops, tokens.data() + rows.size());
        world.send(links.coordinator, kTagResult, encode_sampled(tokens));
        break;
      }
    }
  }
}

}  // namespace skein
