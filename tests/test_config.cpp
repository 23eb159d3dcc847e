// TOML configuration: the example configs load (so they cannot rot), flags override them, and every
// error names file, line and column.
#include <gtest/gtest.h>

#include <filesystem>

#include "common/error.h"
#include "coordinator/config.h"
#include "tests/test_support.h"

namespace skein::test {
namespace {

std::string configs() { return std::string(SKEIN_SOURCE_DIR) + "/configs"; }

TEST(Config, ExampleConfigsLoad) {
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(configs())) {
    if (e.path().extension() != ".toml") continue;
    Config c = load_config(e.path().string());
    EXPECT_FALSE(c.model.empty()) << e.path();
    EXPECT_FALSE(c.strategy.empty()) << e.path();
    ++n;
  }
  EXPECT_GE(n, 2);
  Config c = load_config(configs() + "/gpu-cluster.toml");
  EXPECT_EQ(c.limits.node_aliases.at("gpu-b"), "node002");
  EXPECT_EQ(c.limits.device_memory.at("node001:cuda:0"), 80ull << 30);
  {
    // "cuda" names cuda:0, as in a strategy, so the planner finds it.
    const std::string path = temp_dir() + "/devices.toml";
    write_file(path, "[devices]\ncuda = \"40GiB\"\n\"n1:cuda\" = \"20GiB\"\n");
    const Config g = load_config(path);
    EXPECT_EQ(g.limits.device_memory.at("cuda:0"), 40ull << 30);
    EXPECT_EQ(g.limits.device_memory.at("n1:cuda:0"), 20ull << 30);
  }
  EXPECT_EQ(c.server.auth_token, "change-me");
  EXPECT_TRUE(load_config(configs() + "/tiny-cpu.toml").server.allow_origins.empty());
  {
    const std::string path = temp_dir() + "/origins.toml";
    write_file(path, "[server]\nallow_origins = [\"https://ui.example\", \"http://localhost:3000\", \"*\"]\n");
    EXPECT_EQ(load_config(path).server.allow_origins, (std::vector<std::string>{"https://ui.example", "http://localhost:3000", "*"}));
  }
  EXPECT_EQ(c.limits.slots, 256);
  EXPECT_EQ(c.plan_limits().step_rows, 1024);  // the plan counts working memory for its micro-batches
  EXPECT_EQ(c.plan_limits().slots, 256);
  EXPECT_EQ(c.sampling.token_stop, std::vector<int32_t>{0});
  Config t = load_config(configs() + "/tiny-cpu.toml");  // lists every key with its default
  Config d;
  EXPECT_EQ(t.sessions.host_bytes, d.sessions.host_bytes);
  EXPECT_EQ(t.cache.prefix_bytes, d.cache.prefix_bytes);
  EXPECT_EQ(t.chat.separator, d.chat.separator);
  EXPECT_EQ(t.chat.stop, d.chat.stop);
  EXPECT_EQ(t.chat.tool_prefix, d.chat.tool_prefix);
  EXPECT_EQ(t.chat.tools_intro, d.chat.tools_intro);
  EXPECT_EQ(t.server.client_buffer_bytes, d.server.client_buffer_bytes);
  EXPECT_EQ(t.server.stall_seconds, d.server.stall_seconds);
}

// A tokenizer file named relative to the config is found from any working directory.
TEST(Config, TokenizerPathsAreRelativeToTheConfig) {
  const std::string dir = temp_dir();
  std::filesystem::create_directories(dir + "/sub");
  for (std::string kind : {"world:", "bpe:"}) {
    write_file(dir + "/sub/c.toml", "[model]\ntokenizer = \"" + kind + "../vocab/t.json\"\n");
    EXPECT_EQ(load_config(dir + "/sub/c.toml").tokenizer, kind + dir + "/vocab/t.json");
  }
  write_file(dir + "/sub/c.toml", "[model]\ntokenizer = \"bytes\"\n");
  EXPECT_EQ(load_config(dir + "/sub/c.toml").tokenizer, "bytes");
}

TEST(Config, TinyCpuConfigRunsAndFlagsOverride) {
  std::string cfg = configs() + "/tiny-cpu.toml";
  auto r = run_skein("plan --config " + cfg);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cpu fp32 *2 -> cpu bf16 *1 -> cpu fp32i8"), std::string::npos) << r.output;
  r = run_skein("plan --config " + cfg + " --strategy 'cpu bf16'");
  EXPECT_NE(r.output.find("strategy: cpu bf16\n"), std::string::npos) << r.output;
  r = run_skein("generate --config " + cfg + " --prompt 'The man said' --temperature 0 --alpha-presence 0 --alpha-frequency 0 --max-tokens 20");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("The man said to a state of the s"), std::string::npos) << r.output;  // the fp32 greedy text
  EXPECT_NE(r.output.find("20 generated"), std::string::npos) << r.output;
}

std::string config_error(const std::string& toml) {
  std::string path = temp_dir() + "/bad.toml";
  write_file(path, toml);
  try {
    load_config(path);
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(path + ":", 0), 0u) << m;
    return m.substr(path.size());
  }
  return "";
}

TEST(Config, ErrorsNameLineAndColumn) {
  EXPECT_EQ(config_error("[model]\npath = \"x\"\nstrategy = \"cpu fp8\"\n"),
            ":3:12: strategy: expected dtype fp32, fp16 or bf16 at column 5, got \"fp8\"");
  EXPECT_EQ(config_error("[server]\nport = 70000\n"), ":2:8: 'port' must be between 0 and 65535, got 70000");
  EXPECT_EQ(config_error("[server]\nprot = 1\n"), ":2:8: unknown key 'prot' in [server]");
  EXPECT_EQ(config_error("[servre]\nport = 1\n"), ":1:1: unknown key 'servre' in the top level");
  EXPECT_EQ(config_error("[model]\npath = 3\n"), ":2:8: 'path' must be a string");
  EXPECT_EQ(config_error("[devices]\ncpu = \"lots\"\n"), ":2:7: device memory: 'lots' is not a size (e.g. 80GiB)");
  EXPECT_EQ(config_error("[sampling]\ntemperature = -1.0\n"), ":2:15: temperature must be a finite number >= 0, got -1");
  EXPECT_EQ(config_error("[sampling]\ntop_p = 0.5\nalpha_decay = 2\n"), ":3:15: alpha_decay must be in [0, 1], got 2");
  EXPECT_EQ(config_error("[sampling]\nstop = [\"a\", \"\"]\n"), ":2:8: stop strings must not be empty");
  EXPECT_EQ(config_error("[sessions]\nhost_bytes = \"much\"\n"), ":2:14: host_bytes: 'much' is not a size (e.g. 80GiB)");
  EXPECT_EQ(config_error("[sessions]\nhost_bytes = 3\n"), ":2:14: 'host_bytes' must be a string");  // one location, not two
  // A [devices] key the planner would never look up (a typo) silently dropped its limit.
  EXPECT_EQ(config_error("[devices]\ngpu = \"1GiB\"\n"), ":2:7: 'gpu' is not a device: expected cpu, cuda or cuda:K, optionally after a node (node001:cuda:0)");
  EXPECT_EQ(config_error("[devices]\n\"cuda:x\" = \"1GiB\"\n").substr(0, 31), ":2:12: 'cuda:x' is not a device");
  EXPECT_EQ(config_error("[devices]\ncpu = 5\n"), ":2:7: 'cpu' must be a string");
  EXPECT_EQ(config_error("[nodes]\n\"a b\" = \"host1\"\n").substr(0, 23), ":2:9: node alias 'a b':");
  EXPECT_EQ(config_error("[nodes]\ncuda = \"host1\"\n").substr(0, 24), ":2:8: node alias 'cuda':");
  EXPECT_EQ(config_error("[server]\nclient_timeout_s = 0\n"), ":2:20: 'client_timeout_s' must be > 0");
  EXPECT_EQ(config_error("[cache]\nblock = 4\n"), ":2:9: unknown key 'block' in [cache]");
  EXPECT_EQ(config_error("[server]\nallow_origins = [\"*\", \"https://ui.example/\"]\n"),
            ":2:23: allowed origin 'https://ui.example/': write it as a browser sends it, scheme://host[:port] without a path (https://chat.example.com), or *");
  EXPECT_EQ(config_error("[server]\nallow_origins = \"*\"\n"), ":2:17: 'allow_origins' must be an array of strings");
  EXPECT_NE(config_error("[model\npath = 1\n").find(":1:"), std::string::npos);  // syntax error
  std::string missing = temp_dir() + "/none.toml";
  try {
    load_config(missing);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos);
  }
}

TEST(Config, SizesParse) {
  EXPECT_EQ(parse_size("80GiB", "x"), 80ull << 30);
  EXPECT_EQ(parse_size("1.5 GB", "x"), 1500000000ull);
  EXPECT_EQ(parse_size("4096", "x"), 4096ull);
  EXPECT_EQ(parse_size("1kB", "x"), 1000ull);  // the SI symbol, and the KB people also write
  EXPECT_EQ(parse_size("1KB", "x"), 1000ull);
  EXPECT_THROW(parse_size("-1GiB", "x"), Error);
  EXPECT_THROW(parse_size("12 parsecs", "x"), Error);
  EXPECT_EQ(parse_size("16777215TiB", "x"), 16777215ull << 40);  // 2^64 - 2^40, the largest whole TiB
  EXPECT_THROW(parse_size("18446744073709551616", "x"), Error);  // 2^64
  EXPECT_THROW(parse_size("99999999999TiB", "x"), Error);
}

}  // namespace
}  // namespace skein::test
