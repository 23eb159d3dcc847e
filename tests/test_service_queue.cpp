// The service's queue as clients and /health see it: a request counts as queued from submit() until it
// starts or ends, including while the service thread moves it from the inbox to the waiting list.
#include <gtest/gtest.h>

#include <chrono>
#include <future>

#include "tests/service_harness.h"

namespace skein::test {
namespace {

TEST(ServiceQueue, ARequestStaysCountedWhileTheServiceTakesItIn) {
  ServiceOptions o;
  o.queue_limit = 64;
  Service s(o, 1);
  // One slot, held by a request that runs until cancelled: nothing submitted after it can start.
  std::promise<GenerationSummary> hold_done;
  ServiceRequest hold;
  hold.prompt = s.tok.encode("The man");
  hold.max_tokens = 1 << 24;
  std::promise<void> holding;
  bool first = true;
  hold.on_delta = [&](const std::string&, const std::vector<SampledToken>&) {
    if (std::exchange(first, false)) holding.set_value();
  };
  hold.on_done = [&](const GenerationSummary& g) { hold_done.set_value(g); };
  const uint64_t hold_id = s.service->submit(std::move(hold));
  holding.get_future().wait();

  // After each submit, read the count for a while: the service steps the holding request meanwhile and
  // takes the new one in (the window in which it was once counted nowhere).
  std::vector<uint64_t> ids;
  std::vector<std::promise<GenerationSummary>> ended(40);
  size_t low_reads = 0;
  for (size_t i = 0; i < ended.size(); ++i) {
    ServiceRequest r;
    r.prompt = s.tok.encode("Hello");
    r.max_tokens = 1;
    r.on_done = [&ended, i](const GenerationSummary& g) { ended[i].set_value(g); };
    ids.push_back(s.service->submit(std::move(r)));
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(3);
    while (std::chrono::steady_clock::now() < until)
      if (s.service->queued() != i + 1) ++low_reads;
  }
  EXPECT_EQ(low_reads, 0u) << "reads of queued() that missed a request being taken in";

  // Cancelled ones leave the count before their end reaches the client.
  for (size_t i = 0; i < ids.size(); ++i) {
    s.service->cancel(ids[i]);
    EXPECT_EQ(ended[i].get_future().get().finish_reason, "cancelled");
    EXPECT_EQ(s.service->queued(), ids.size() - i - 1);
  }
  s.service->cancel(hold_id);
  EXPECT_EQ(hold_done.get_future().get().finish_reason, "cancelled");
}

}  // namespace
}  // namespace skein::test
