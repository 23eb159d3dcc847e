// Device discovery, memory and the one stream per device that every launch, copy and allocation of
// Skein goes to. Nothing here waits for the GPU except a download: allocations are stream-ordered
// (cudaMallocAsync, pool kept warm), and small host data (token ids, batch tables) is staged through a
// pinned ring so a step enqueues its whole forward pass without a host round trip.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <map>
#include <mutex>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace skein::cuda {

namespace {

constexpr size_t kStagingHalf = size_t(2) << 20;  // two halves of pinned staging, 2 MiB each

struct DeviceContext {
  cudaStream_t stream = nullptr;
  cudaStream_t copies = nullptr;  // weight uploads of streamed layers
  // Pinned staging ring in two halves: a half is refilled only after the event recorded when the
  // ring left it has completed, i.e. after the copies that read it ran.
  char* staging = nullptr;
  int half = 0;
  size_t used = 0;
  cudaEvent_t left[2] = {};
  bool pending[2] = {};
  bool chained = false;  // programmatic dependent launches (kernels/cuda/chained_launch.h)
};

std::mutex g_mu;
std::map<int, DeviceContext>& contexts() {
  static std::map<int, DeviceContext> m;
  return m;
}

DeviceContext& context() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(g_mu);
  DeviceContext& c = contexts()[dev];
  if (!c.stream) {
    check(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cudaStreamCreateWithFlags(&c.copies, cudaStreamNonBlocking), "cudaStreamCreate");
    // Freed blocks stay in the pool: a step's temporaries come back without a trip to the driver.
    cudaMemPool_t pool;
    check(cudaDeviceGetDefaultMemPool(&pool, dev), "cudaDeviceGetDefaultMemPool");
    uint64_t keep = UINT64_MAX;
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
    check(cudaMallocHost(&c.staging, 2 * kStagingHalf), "cudaMallocHost (staging)");
    for (auto& e : c.left) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    int major = 0;
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute");
    const char* pdl = std::getenv("SKEIN_CUDA_PDL");
    c.chained = major >= 9 && !(pdl && std::strcmp(pdl, "0") == 0);
  }
  return c;
}

}  // namespace

cudaStream_t stream() { return context().stream; }
bool chained_launches() { return context().chained; }
void* stream_handle() { return context().stream; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

void set_device(int device) { check(cudaSetDevice(device), "cudaSetDevice"); }

DeviceInfo device_info(int device) {
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
  DeviceInfo d;
  d.name = p.name;
  d.sm = p.major * 10 + p.minor;
  int clock_khz = 0, bus_bits = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device);
  d.peak_bandwidth_gbs = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;
  int current = 0;
  cudaGetDevice(&current);
  cudaSetDevice(device);
  cudaMemGetInfo(&d.free_bytes, &d.total_bytes);
  cudaSetDevice(current);
  return d;
}

void synchronize() { check(cudaStreamSynchronize(stream()), "synchronize"); }

float* alloc_floats(size_t n) { return static_cast<float*>(alloc_bytes(n * sizeof(float))); }
void* alloc_bytes(size_t n) {
  void* p = nullptr;
  check(cudaMallocAsync(&p, n ? n : 1, stream()), "cudaMallocAsync");
  return p;
}
void free_floats(float* p) { free_bytes(p); }
void free_bytes(void* p) {
  if (p) cudaFreeAsync(p, stream());
}
// Pageable sources: the driver stages them before returning, so the caller may reuse its buffer at once;
// the copy is ordered on the stream like every kernel.
void upload(float* dst, const float* src, size_t n) { upload_bytes(dst, src, n * sizeof(float)); }
void upload_bytes(void* dst, const void* src, size_t n) {
  if (n) check(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, stream()), "upload");
}
void download(float* dst, const float* src, size_t n) { download_bytes(dst, src, n * sizeof(float)); }
void download_bytes(void* dst, const void* src, size_t n) {
  if (!n) return;
  cudaStream_t s = stream();
  check(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s), "download");
  check(cudaStreamSynchronize(s), "download");
}
void copy(float* dst, const float* src, size_t n) {
  if (n) check(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream()), "copy");
}

struct Graph {
  cudaGraphExec_t exec;
};
struct Event {
  cudaEvent_t e;
};

void begin_capture() { check(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture"); }

Graph* end_capture(bool keep) {
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaStreamEndCapture(stream(), &g);
  if (e != cudaSuccess || !keep) {
    if (g) cudaGraphDestroy(g);
    cudaGetLastError();  // a failed capture leaves an error behind; the stream itself is usable again
    if (keep) check(e, "cudaStreamEndCapture");
    return nullptr;
  }
  cudaGraphExec_t exec = nullptr;
  e = cudaGraphInstantiate(&exec, g, 0);
  cudaGraphDestroy(g);
  check(e, "cudaGraphInstantiate");
  return new Graph{exec};
}

void launch(Graph* g) { check(cudaGraphLaunch(g->exec, stream()), "cudaGraphLaunch"); }
void destroy(Graph* g) {
  if (!g) return;
  cudaGraphExecDestroy(g->exec);
  delete g;
}

void* alloc_pinned(size_t n) {
  void* p = nullptr;
  check(cudaMallocHost(&p, n ? n : 1), "cudaMallocHost");
  return p;
}
void free_pinned(void* p) {
  if (p) cudaFreeHost(p);
}
void upload_pinned(void* dst, const void* pinned_src, size_t n) {
  if (n) check(cudaMemcpyAsync(dst, pinned_src, n, cudaMemcpyHostToDevice, stream()), "upload (pinned)");
}

Event* new_event(bool timed) {
  auto* e = new Event{};
  check(cudaEventCreateWithFlags(&e->e, timed ? cudaEventDefault : cudaEventDisableTiming), "cudaEventCreate");
  return e;
}
void record(Event* e) { check(cudaEventRecord(e->e, stream()), "cudaEventRecord"); }
void wait(Event* e) { check(cudaEventSynchronize(e->e), "cudaEventSynchronize"); }
double elapsed_seconds(Event* from, Event* to) {
  check(cudaEventSynchronize(to->e), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, from->e, to->e), "cudaEventElapsedTime");
  return double(ms) / 1e3;
}
void destroy(Event* e) {
  if (!e) return;
  cudaEventDestroy(e->e);
  delete e;
}

// Pinned host -> device copies on the copy stream, as streamed layers make them; the copy engine's
// rate over this link (PCIe or C2C) is what a plan streaming layers (*N+) can reach per token.
double measure_upload_gb_s(int device, size_t bytes, int repeats) {
  int current = 0;
  check(cudaGetDevice(&current), "cudaGetDevice");
  set_device(device);
  void* host = alloc_pinned(bytes);
  std::memset(host, 1, bytes);  // the pages exist before the first copy
  void* dev = nullptr;
  check(cudaMalloc(&dev, bytes), "cudaMalloc (upload probe)");
  Event* from = new_event(true);
  Event* to = new_event(true);
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {  // the first copy warms the link up and is not counted
    record_on_copy_stream(from);
    upload_on_copy_stream(dev, host, bytes);
    record_on_copy_stream(to);
    const double s = elapsed_seconds(from, to);
    if (r > 0 && s > 0) best = std::max(best, double(bytes) / s / 1e9);
  }
  destroy(from);
  destroy(to);
  cudaFree(dev);
  free_pinned(host);
  set_device(current);
  return best;
}

void upload_on_copy_stream(void* dst, const void* pinned_src, size_t n) {
  if (n) check(cudaMemcpyAsync(dst, pinned_src, n, cudaMemcpyHostToDevice, context().copies), "upload (copy stream)");
}
void record_on_copy_stream(Event* e) { check(cudaEventRecord(e->e, context().copies), "cudaEventRecord"); }
void copy_stream_waits(Event* e) { check(cudaStreamWaitEvent(context().copies, e->e, 0), "cudaStreamWaitEvent"); }
void stream_waits(Event* e) { check(cudaStreamWaitEvent(stream(), e->e, 0), "cudaStreamWaitEvent"); }

namespace {
std::atomic<uint64_t> g_workspace_epoch{0};
}
uint64_t workspace_epoch() { return g_workspace_epoch.load(); }
void bump_workspace_epoch() { ++g_workspace_epoch; }

void stage(void* dst, const void* src, size_t n) {
  if (!n) return;
  DeviceContext& c = context();
  if (n > kStagingHalf) {  // larger than the ring: an ordinary (staged by the driver) upload
    upload_bytes(dst, src, n);
    return;
  }
  if (c.used + n > kStagingHalf) {
    check(cudaEventRecord(c.left[c.half], c.stream), "cudaEventRecord");
    c.pending[c.half] = true;
    c.half ^= 1;
    c.used = 0;
    if (c.pending[c.half]) check(cudaEventSynchronize(c.left[c.half]), "staging wait");
    c.pending[c.half] = false;
  }
  char* h = c.staging + size_t(c.half) * kStagingHalf + c.used;
  std::memcpy(h, src, n);
  check(cudaMemcpyAsync(dst, h, n, cudaMemcpyHostToDevice, c.stream), "staged upload");
  c.used += (n + 255) / 256 * 256;
}

}  // namespace skein::cuda
