// A stage worker rank: holds its layer range and a slot table of per-request state shards, and runs the
// coordinator's control messages in order until Shutdown. Activations arrive from the previous stage's
// rank (or are embedded here on the first stage) and go on to the next (or, on the last stage, become
// logits for the coordinator).
#pragma once
#include "model/rwkv_model.h"
#include "net/mpi_world.h"
#include "net/nccl_link.h"

namespace skein {

struct StageLinks {
  int coordinator = 0;
  int prev = -1;  // rank of the previous stage; -1 on the first stage
  int next = -1;  // rank of the next stage; -1 on the last stage
  // Hops whose both ends are GPUs go over NCCL (net/nccl_link) instead of MPI host buffers.
  bool nccl_prev = false, nccl_next = false;
  int cuda_device = -1;  // this stage's GPU, for its NCCL links
};

void run_stage_worker(MpiWorld& world, const StageLinks& links, RwkvModel& stage);

}  // namespace skein
