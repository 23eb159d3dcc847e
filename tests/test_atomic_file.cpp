// Files written whole or not at all, also by several writers of one file at once: the ranks of a job
// making the default model on a fresh machine did collide on one temporary name, and the job failed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

namespace fs = std::filesystem;

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(AtomicFile, WritersOfOneFileAtOnceEachLeaveAWholeFile) {
  const std::string dir = temp_dir() + "/atomic";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = dir + "/shared.bin";
  std::vector<std::thread> writers;
  std::vector<std::string> errors(4);
  for (int w = 0; w < 4; ++w)
    writers.emplace_back([&, w] {
      const std::string content(100000, char('a' + w));  // large enough for writes to overlap
      try {
        for (int i = 0; i < 50; ++i)
          write_file_atomically(path, [&](const std::string& tmp) { std::ofstream(tmp, std::ios::binary) << content; });
      } catch (const Error& e) {
        errors[size_t(w)] = e.what();
      }
    });
  for (auto& t : writers) t.join();
  for (auto& e : errors) EXPECT_EQ(e, "");
  const std::string got = read_file(path);
  ASSERT_EQ(got.size(), 100000u);
  EXPECT_EQ(got.find_first_not_of(got[0]), std::string::npos) << "a file mixed from two writers";
  EXPECT_EQ(names_in(dir), std::set<std::string>{"shared.bin"});  // no temporaries left
}

TEST(AtomicFile, AFailedWriteLeavesTheOldFileAndNoTemporary) {
  const std::string dir = temp_dir() + "/atomic-fail";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string path = dir + "/kept.txt";
  write_file_atomically(path, [](const std::string& tmp) { std::ofstream(tmp) << "old"; });
  EXPECT_THROW(write_file_atomically(path,
                                     [](const std::string& tmp) {
                                       std::ofstream(tmp) << "half";
                                       fail("disk full");
                                     }),
               Error);
  EXPECT_EQ(read_file(path), "old");
  EXPECT_EQ(names_in(dir), std::set<std::string>{"kept.txt"});
}

// The quick start on a fresh machine: every rank finds no default model and makes it.
TEST(AtomicFile, RanksMakingTheDefaultModelAtOnceAllSucceed) {
  for (int round = 0; round < 3; ++round) {
    const std::string cache = temp_dir() + "/fresh-cache-" + std::to_string(round);
    fs::remove_all(cache);
    auto r = run_shell("env XDG_CACHE_HOME=" + cache + " " + mpirun_skein(3, "generate --prompt 'The' --max-tokens 4"));
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(names_in(cache + "/skein"), std::set<std::string>{"default-v7-L6-C256-seed1.pth"});
  }
}

}  // namespace
}  // namespace skein::test
