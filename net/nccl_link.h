// Activations between two GPU stages on different ranks, device to device over NCCL point-to-point
// (the MPI path stages them through host memory instead). Each link is its own two-rank communicator:
// the sending rank makes the unique id and gives it to the receiver over MPI, so links along the
// pipeline come up pair by pair, without a collective over the whole world.
#pragma once
#include <cstddef>
#include <initializer_list>
#include <memory>

#include "net/mpi_world.h"

namespace skein {

class NcclLink {
 public:
  // True when this build has NCCL.
  static bool available();
  // Both ends call this at the same point of their start-up (the sender with sender=true), with their
  // GPU current. Throws skein::Error when NCCL is missing or the communicator cannot be made.
  NcclLink(MpiWorld& world, int peer_rank, bool sender, int device);
  ~NcclLink();
  NcclLink(const NcclLink&) = delete;
  NcclLink& operator=(const NcclLink&) = delete;

  // Sends n floats from each part (device memory), as one group of sends. The parts are first copied on the
  // compute stream into one of two send buffers and sent from a communication stream, so the stage's
  // next step may overwrite them at once; the host waits only when both buffers are still in flight.
  void send(std::initializer_list<const float*> parts, size_t n);
  // Receives into each part on the compute stream: kernels enqueued afterwards see the data.
  void recv(std::initializer_list<float*> parts, size_t n);

  // Latency probes (the pipeline benchmark), with the pipeline idle: the sending end sends n floats and
  // waits for them back; the receiving end returns them. Both wait for completion.
  void round_trip(float* dev, size_t n);
  void answer(float* dev, size_t n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace skein
