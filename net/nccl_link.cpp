#include "net/nccl_link.h"

#include "common/error.h"
#include "net/stage_protocol.h"

#if SKEIN_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

#include "kernels/cuda/cuda_ops.h"
#endif

namespace skein {

#if SKEIN_HAVE_NCCL

namespace {
void check_nccl(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) fail("NCCL: ", what, ": ", ncclGetErrorString(r));
}
void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("CUDA: ", what, ": ", cudaGetErrorString(e));
}
}  // namespace

struct NcclLink::Impl {
  int device = 0;
  int peer = 0;  // the other end's rank within the two-rank communicator
  ncclComm_t comm = nullptr;
  cudaStream_t compute = nullptr, comm_stream = nullptr;
  // Double-buffered sends: `ready` orders a buffer's send after its copy, `sent` tells when it may be refilled.
  float* buf[2] = {};
  size_t cap[2] = {};
  cudaEvent_t ready[2] = {}, sent[2] = {};
  bool in_flight[2] = {};
  int next = 0;
};

bool NcclLink::available() { return true; }

NcclLink::NcclLink(MpiWorld& world, int peer_rank, bool sender, int device) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.device = device;
  m.peer = sender ? 1 : 0;
  cuda::set_device(device);
  // The id goes with a flag, so a sender that cannot make one fails both ends instead of hanging one.
  struct Hello {
    int ok;
    ncclUniqueId id;
  } hello{};
  if (sender) {
    hello.ok = ncclGetUniqueId(&hello.id) == ncclSuccess;
    world.send(peer_rank, kTagNccl, &hello, sizeof hello);
    if (!hello.ok) fail("NCCL: ncclGetUniqueId failed on rank ", world.rank());
  } else {
    world.recv_into(peer_rank, kTagNccl, &hello, sizeof hello);
    if (!hello.ok) fail("NCCL: rank ", peer_rank, " could not make a communicator id");
  }
  check_nccl(ncclCommInitRank(&m.comm, 2, hello.id, sender ? 0 : 1), "ncclCommInitRank");
  m.compute = static_cast<cudaStream_t>(cuda::stream_handle());
  check_cuda(cudaStreamCreateWithFlags(&m.comm_stream, cudaStreamNonBlocking), "cudaStreamCreate");
  for (int i = 0; i < 2; ++i) {
    check_cuda(cudaEventCreateWithFlags(&m.ready[i], cudaEventDisableTiming), "cudaEventCreate");
    check_cuda(cudaEventCreateWithFlags(&m.sent[i], cudaEventDisableTiming), "cudaEventCreate");
  }
}

NcclLink::~NcclLink() {
  Impl& m = *impl_;
  cudaSetDevice(m.device);
  if (m.comm_stream) cudaStreamSynchronize(m.comm_stream);
  if (m.comm) ncclCommDestroy(m.comm);
  for (int i = 0; i < 2; ++i) {
    if (m.buf[i]) cudaFree(m.buf[i]);
    if (m.ready[i]) cudaEventDestroy(m.ready[i]);
    if (m.sent[i]) cudaEventDestroy(m.sent[i]);
  }
  if (m.comm_stream) cudaStreamDestroy(m.comm_stream);
}

void NcclLink::send(std::initializer_list<const float*> parts, size_t n) {
  Impl& m = *impl_;
  cuda::set_device(m.device);
  const int b = m.next;
  m.next ^= 1;
  if (m.in_flight[b]) check_cuda(cudaEventSynchronize(m.sent[b]), "waiting for an earlier send");
  const size_t total = n * parts.size();
  if (m.cap[b] < total) {
    if (m.buf[b]) check_cuda(cudaFree(m.buf[b]), "cudaFree");
    m.buf[b] = nullptr;
    check_cuda(cudaMalloc(&m.buf[b], total * sizeof(float)), "cudaMalloc (send buffer)");
    m.cap[b] = total;
  }
  size_t off = 0;
  for (const float* p : parts) {
    check_cuda(cudaMemcpyAsync(m.buf[b] + off, p, n * sizeof(float), cudaMemcpyDeviceToDevice, m.compute), "copy to the send buffer");
    off += n;
  }
  check_cuda(cudaEventRecord(m.ready[b], m.compute), "cudaEventRecord");
  check_cuda(cudaStreamWaitEvent(m.comm_stream, m.ready[b], 0), "cudaStreamWaitEvent");
  // One send per part, grouped, matching the receiver's grouped receives one to one.
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  for (size_t i = 0; i < parts.size(); ++i) check_nccl(ncclSend(m.buf[b] + i * n, n, ncclFloat32, m.peer, m.comm, m.comm_stream), "ncclSend");
  check_nccl(ncclGroupEnd(), "ncclGroupEnd");
  check_cuda(cudaEventRecord(m.sent[b], m.comm_stream), "cudaEventRecord");
  m.in_flight[b] = true;
}

void NcclLink::recv(std::initializer_list<float*> parts, size_t n) {
  Impl& m = *impl_;
  cuda::set_device(m.device);
  // The parts are received in a group, in the order the sender sent them.
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  for (float* p : parts) check_nccl(ncclRecv(p, n, ncclFloat32, m.peer, m.comm, m.compute), "ncclRecv");
  check_nccl(ncclGroupEnd(), "ncclGroupEnd");
}

void NcclLink::round_trip(float* dev, size_t n) {
  Impl& m = *impl_;
  cuda::set_device(m.device);
  check_cuda(cudaStreamSynchronize(m.comm_stream), "waiting for earlier sends");
  check_nccl(ncclSend(dev, n, ncclFloat32, m.peer, m.comm, m.compute), "ncclSend");
  check_nccl(ncclRecv(dev, n, ncclFloat32, m.peer, m.comm, m.compute), "ncclRecv");
  check_cuda(cudaStreamSynchronize(m.compute), "round trip");
}

void NcclLink::answer(float* dev, size_t n) {
  Impl& m = *impl_;
  cuda::set_device(m.device);
  check_nccl(ncclRecv(dev, n, ncclFloat32, m.peer, m.comm, m.compute), "ncclRecv");
  check_nccl(ncclSend(dev, n, ncclFloat32, m.peer, m.comm, m.compute), "ncclSend");
  check_cuda(cudaStreamSynchronize(m.compute), "answer");
}

#else  // built without NCCL: the MPI path carries every hop

struct NcclLink::Impl {};
bool NcclLink::available() { return false; }
NcclLink::NcclLink(MpiWorld&, int, bool, int) { fail("NCCL: this build has no NCCL (it was not found when Skein was built)"); }
NcclLink::~NcclLink() = default;
void NcclLink::send(std::initializer_list<const float*>, size_t) {}
void NcclLink::recv(std::initializer_list<float*>, size_t) {}
void NcclLink::round_trip(float*, size_t) {}
void NcclLink::answer(float*, size_t) {}

#endif

}  // namespace skein
