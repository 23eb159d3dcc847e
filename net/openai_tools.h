// OpenAI function calling for /v1/chat/completions: `tools`, `tool_choice` and the messages that carry
// calls and their results. RWKV models have no tool format of their own, so Skein gives them one:
// the tools are listed at the start of the prompt, and a call is the reply `{"name": NAME, "arguments":
// {...}}`, nothing else (earlier calls in the messages are written the same way). What that text may
// be is a JSON Schema (`call_schema`), so
// - tool_choice "required" or a named function constrains the reply to it, as structured output does:
//   the call always parses and its arguments always fit the function's `parameters`;
// - "auto" lets the model write freely, and a reply that is exactly one call text is returned as a call;
// - "none" lists the tools but never reads a reply as a call.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "coordinator/config.h"
#include "coordinator/json_grammar.h"

namespace skein {

// What one request offers the model and asks of it. Without `tools`, choice is None and prompt empty.
struct ChatTools {
  enum class Choice { None, Auto, Required, Named };
  static constexpr int kMaxTools = 128;
  // Offered for the model to choose from (auto, required): a call is a union of this many readings.
  static constexpr int kMaxChoosable = int(JsonSchema::kMaxBranches);

  Choice choice = Choice::None;
  std::string prompt;       // the tools block the prompt starts with
  std::string call_schema;  // JSON Schema text of one call of a tool the model may call (Named: that one)
  bool calls() const { return choice != Choice::None; }
};

// Reads `tools`, `tool_choice` and `parallel_tool_calls` of `request` (the parsed body; `body` its text,
// read again to keep each schema's keys in order). Throws skein::Error naming the field.
ChatTools parse_chat_tools(const nlohmann::json& request, const std::string& body, const ChatConfig& chat);

// How a call is written into the prompt and by the model: {"name":NAME,"arguments":ARGUMENTS}.
// `arguments` is JSON text (an assistant message's tool_calls[].function.arguments); throws skein::Error
// naming `where` when it is not.
std::string tool_call_text(const std::string& name, const std::string& arguments, const std::string& where);

struct ToolCall {
  std::string name;
  std::string arguments;  // JSON text, as OpenAI sends it
};

// Splits a reply as it streams into what is content and what may be a call. While the text so far
// (after leading whitespace) can still become a call, it is held; once it cannot, it is content.
class ToolCallWatch {
 public:
  explicit ToolCallWatch(const ChatTools& tools);
  // The content `text` (the reply's next piece) lets through now: "" while it is held.
  std::string feed(std::string_view text);
  // The reply ended: a call when the whole reply is one, else the content still held.
  struct End {
    std::optional<ToolCall> call;
    std::string content;
  };
  End finish();
  // Text is held that may still become a call.
  bool holding() const { return call_.has_value(); }

 private:
  std::shared_ptr<const JsonSchema> schema_;  // null: every byte is content (no tools, or "none")
  std::optional<JsonRecognizer> call_;        // the held text read as a call; empty once it is content
  std::string held_;
  bool begun_ = false;  // a byte other than whitespace came
};

}  // namespace skein
