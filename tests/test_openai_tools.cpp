// Function calling: how `tools` and `tool_choice` are read and refused, the call schema they give (with
// each tool's $refs moved along with its parameters), and the watch that tells a streamed reply's
// content from a call. The server end of it is in test_http.cpp.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "coordinator/json_grammar.h"
#include "net/openai_tools.h"

namespace skein::test {
namespace {

using json = nlohmann::json;

const char* kWeather = R"({"type": "function", "function": {"name": "get_weather", "description": "Today's weather",
  "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]},
                                                  "days": {"type": "integer", "minimum": 1, "maximum": 7}},
                 "required": ["city", "days"]}}})";
const char* kClock = R"({"type": "function", "function": {"name": "clock"}})";

ChatTools tools_of(const std::string& body) { return parse_chat_tools(json::parse(body), body, ChatConfig{}); }

std::string request(const std::string& tools, const std::string& more = "") {
  return R"({"messages": [], "tools": [)" + tools + "]" + more + "}";
}

// Whether `text` is one whole text of the call schema.
bool is_call(const ChatTools& t, const std::string& text) {
  JsonRecognizer r(*compiled_schema(t.call_schema));
  return r.push(text) && r.complete();
}

TEST(ChatTools, AreListedInThePromptAndCallsFollowTheirParameters) {
  ChatTools t = tools_of(request(std::string(kWeather) + ", " + kClock));
  EXPECT_EQ(t.choice, ChatTools::Choice::Auto);  // OpenAI's default when tools are given
  // One line per tool, its keys in the order sent.
  const std::string weather_line =
      R"({"name":"get_weather","description":"Today's weather","parameters":{"type":"object","properties":{"city":{"type":"string","enum":["Oslo","Paris"]},"days":{"type":"integer","minimum":1,"maximum":7}},"required":["city","days"]}})";
  EXPECT_EQ(t.prompt, "System: " + ChatConfig{}.tools_intro + "\n" + weather_line + "\n" +
                          R"({"name":"clock","parameters":{"type":"object","properties":{}}})" + "\n\n");
  EXPECT_TRUE(is_call(t, R"({"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}})"));
  EXPECT_TRUE(is_call(t, R"({"name":"clock","arguments":{}})"));
  EXPECT_FALSE(is_call(t, R"({"name": "get_weather", "arguments": {"city": "Rome", "days": 3}})"));
  EXPECT_FALSE(is_call(t, R"({"name": "get_weather", "arguments": {"city": "Oslo", "days": 8}})"));
  EXPECT_FALSE(is_call(t, R"({"name": "get_weather", "arguments": {"city": "Oslo"}})"));
  EXPECT_FALSE(is_call(t, R"({"name": "alarm", "arguments": {}})"));
  EXPECT_FALSE(is_call(t, R"({"arguments": {}, "name": "clock"})"));  // the name first: it decides the arguments

  ChatTools named = tools_of(request(std::string(kWeather) + ", " + kClock, R"(, "tool_choice": {"type": "function", "function": {"name": "clock"}})"));
  EXPECT_EQ(named.choice, ChatTools::Choice::Named);
  EXPECT_EQ(named.prompt, t.prompt);  // every tool is listed; only the named one may be called
  EXPECT_TRUE(is_call(named, R"({"name": "clock", "arguments": {}})"));
  EXPECT_FALSE(is_call(named, R"({"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}})"));

  EXPECT_EQ(tools_of(request(kClock, R"(, "tool_choice": "required", "parallel_tool_calls": false)")).choice, ChatTools::Choice::Required);
  ChatTools none = tools_of(request(kClock, R"(, "tool_choice": "none")"));
  EXPECT_FALSE(none.calls());
  EXPECT_EQ(none.prompt, t.prompt.substr(0, t.prompt.find("\n{")) + "\n" + R"({"name":"clock","parameters":{"type":"object","properties":{}}})" + "\n\n");
  EXPECT_FALSE(tools_of(R"({"messages": [], "tool_choice": "none"})").calls());
  EXPECT_TRUE(tools_of(R"({"messages": []})").prompt.empty());
}

// pydantic writes a model with nested models as $defs and "#/$defs/Name" refs, a recursive one with
// refs to itself: they must still find their targets once the parameters sit inside the call schema.
TEST(ChatTools, RefsInParametersMoveWithThem) {
  const std::string tree = R"({"type": "function", "function": {"name": "plant", "parameters": {
    "$defs": {"Leaf": {"type": "object", "properties": {"colour": {"enum": ["green", "red"]}}, "required": ["colour"]},
              "Node": {"type": "object", "properties": {"leaf": {"$ref": "#/$defs/Leaf"},
                                                        "next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}},
                       "required": ["leaf", "next"]}},
    "type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}, "tag": {"const": {"$ref": "#/not/a/ref"}}}, "required": ["root", "tag"]}}})";
  ChatTools t = tools_of(request(tree + ", " + kClock));
  EXPECT_TRUE(is_call(t, R"({"name": "plant", "arguments": {"root": {"leaf": {"colour": "red"}, "next": {"leaf": {"colour": "green"}, "next": null}}, "tag": {"$ref":"#/not/a/ref"}}})"));
  EXPECT_FALSE(is_call(t, R"({"name": "plant", "arguments": {"root": {"leaf": {"colour": "blue"}, "next": null}, "tag": {"$ref":"#/not/a/ref"}}})"));
  // The const's "$ref" is data (a const is its compact text): moved, it would no longer be what the tool asked for.
  EXPECT_FALSE(is_call(t, R"({"name": "plant", "arguments": {"root": {"leaf": {"colour": "red"}, "next": null}, "tag": {"$ref":"#/$defs/skein_tool_0/not/a/ref"}}})"));

  const std::string self = R"({"type": "function", "function": {"name": "list", "parameters": {"type": "object",
    "properties": {"head": {"type": "integer"}, "tail": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["head", "tail"]}}})";
  ChatTools s = tools_of(request(self, R"(, "tool_choice": "required")"));
  EXPECT_TRUE(is_call(s, R"({"name": "list", "arguments": {"head": 1, "tail": {"head": 2, "tail": null}}})"));
  EXPECT_FALSE(is_call(s, R"({"name": "list", "arguments": {"head": 1, "tail": {"head": "2", "tail": null}}})"));
}

TEST(ChatTools, MalformedToolsAreRefusedWithTheirPlace) {
  const std::string seventeen = [] {
    std::string s;
    for (int i = 0; i < 17; ++i) s += std::string(i ? ", " : "") + R"({"type": "function", "function": {"name": "f)" + std::to_string(i) + "\"}}";
    return s;
  }();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"tools": {}})", "tools: must be a non-empty array"},
      {R"({"tools": []})", "tools: must be a non-empty array"},
      {request("1"), "tools[0]: must be {\"type\": \"function\""},
      {request(R"({"type": "retrieval", "function": {"name": "a"}})"), "tools[0].type: must be \"function\""},
      {request(R"({"type": "function", "function": {"name": "a"}, "extra": 1})"), "tools[0]: unknown field 'extra'"},
      {request(R"({"type": "function", "function": {"name": "a b"}})"), "tools[0].function.name: must be 1 to 64 letters"},
      {request(R"({"type": "function", "function": {"description": "x"}})"), "tools[0].function.name: must be"},
      {request(R"({"type": "function", "function": {"name": "a", "description": 3}})"), "tools[0].function.description: must be a string"},
      {request(R"({"type": "function", "function": {"name": "a", "returns": 3}})"), "tools[0].function: unknown field 'returns'"},
      {request(std::string(kClock) + ", " + kClock), "tools[1].function.name: 'clock' names two tools"},
      {request(R"({"type": "function", "function": {"name": "a", "parameters": {"type": "string"}}})"),
       "tools[0].function.parameters: must be a schema of an object"},
      {request(R"({"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"not": {}}}}}})"),
       "tools[0].function.parameters: schema/properties/x: 'not' is not supported"},
      {request(kClock, R"(, "tool_choice": "always")"), "tool_choice: must be \"none\", \"auto\", \"required\" or"},
      {request(kClock, R"(, "tool_choice": {"type": "function", "function": {"name": "alarm"}})"), "tool_choice: no tool is named 'alarm'"},
      {request(kClock, R"(, "tool_choice": {"type": "function"})"), "tool_choice: must be"},
      {R"({"tool_choice": "required"})", "tool_choice: needs tools"},
      {request(kClock, R"(, "parallel_tool_calls": 1)"), "parallel_tool_calls: must be true or false"},
      {request(seventeen), "tools: the model can choose among at most 16 tools, got 17"},
  };
  for (auto& [body, message] : cases) {
    try {
      tools_of(body);
      ADD_FAILURE() << "accepted: " << body;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind(message, 0), 0u) << body << "\n -> " << e.what();
    }
  }
  // Seventeen tools may be offered when one is named: the model then chooses none of them.
  EXPECT_EQ(tools_of(request(seventeen, R"(, "tool_choice": {"type": "function", "function": {"name": "f16"}})")).choice, ChatTools::Choice::Named);
}

TEST(ChatTools, EarlierCallsAreWrittenAsTheModelWritesThem) {
  EXPECT_EQ(tool_call_text("get_weather", R"({"city": "Oslo", "days": 3})", "x"), R"({"name":"get_weather","arguments":{"city":"Oslo","days":3}})");
  try {
    tool_call_text("a", "{city", "messages[2].tool_calls[0].function.arguments");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "messages[2].tool_calls[0].function.arguments: is not JSON text");
  }
}

// Feeds `pieces` to a fresh watch; returns the content it let through as it came, and its end.
std::pair<std::string, ToolCallWatch::End> watch(const ChatTools& t, const std::vector<std::string>& pieces) {
  ToolCallWatch w(t);
  std::string streamed;
  for (auto& p : pieces) streamed += w.feed(p);
  return {streamed, w.finish()};
}

TEST(ChatTools, TheWatchHoldsWhatMayBeACallAndLetsContentThrough) {
  ChatTools t = tools_of(request(std::string(kWeather) + ", " + kClock));
  auto [held, call] = watch(t, {" {\"name\": \"get_", "weather\", \"arguments\": {\"city\": \"Pa", "ris\",\n  \"days\": 2}}"});
  EXPECT_EQ(held, "");
  ASSERT_TRUE(call.call);
  EXPECT_EQ(call.call->name, "get_weather");
  EXPECT_EQ(call.call->arguments, R"({"city":"Paris","days":2})");
  EXPECT_EQ(call.content, "");

  auto [text, end] = watch(t, {" ", "Hello", " there"});  // held only while it may be a call: the space
  EXPECT_EQ(text, " Hello there");
  EXPECT_FALSE(end.call);
  EXPECT_EQ(end.content, "");

  auto [json_text, json_end] = watch(t, {"{\"na", "me\": \"get_weather\", \"arguments\": {\"town\""});  // JSON, not a call
  EXPECT_EQ(json_text, "{\"name\": \"get_weather\", \"arguments\": {\"town\"");
  EXPECT_FALSE(json_end.call);

  auto [cut, cut_end] = watch(t, {"{\"name\": \"clock\", \"argu"});  // max_tokens came first
  EXPECT_EQ(cut, "");
  EXPECT_FALSE(cut_end.call);
  EXPECT_EQ(cut_end.content, "{\"name\": \"clock\", \"argu");

  auto [more, more_end] = watch(t, {"{\"name\": \"clock\", \"arguments\": {}}", " and then"});  // a call is the whole reply
  EXPECT_EQ(more, "{\"name\": \"clock\", \"arguments\": {}} and then");
  EXPECT_FALSE(more_end.call);

  ChatTools none = tools_of(request(kClock, R"(, "tool_choice": "none")"));
  auto [as_text, as_text_end] = watch(none, {"{\"name\": \"clock\", \"arguments\": {}}"});
  EXPECT_EQ(as_text, "{\"name\": \"clock\", \"arguments\": {}}");
  EXPECT_FALSE(as_text_end.call);
}

}  // namespace
}  // namespace skein::test
