#include "net/openai_tools.h"

#include <cctype>
#include <set>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/json_text.h"
#include "coordinator/json_schema.h"

namespace skein {

namespace {

using ordered_json = nlohmann::ordered_json;

// A tool's parameters move from the root of their own document to /$defs/skein_tool_I of the call
// schema: their $refs ("#", "#/$defs/Name") move with them. Only schema positions are walked, so a
// const or enum value that holds a "$ref" key stays as it is.
void move_refs(ordered_json& s, const std::string& root) {
  if (s.is_array()) {
    for (auto& sub : s) move_refs(sub, root);
    return;
  }
  if (!s.is_object()) return;
  for (auto& [k, v] : s.items()) {
    if (k == "$ref") {
      if (v.is_string() && !v.get<std::string>().empty() && v.get<std::string>()[0] == '#') v = "#" + root + v.get<std::string>().substr(1);
    } else if (k == "properties" || k == "$defs" || k == "definitions") {
      if (v.is_object())
        for (auto& [name, sub] : v.items()) move_refs(sub, root);
    } else if (k == "items" || k == "additionalProperties" || k == "anyOf" || k == "oneOf" || k == "allOf" || k == "prefixItems") {
      move_refs(v, root);
    }
  }
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

struct Tool {
  std::string name;
  ordered_json listing;     // {"name", "description", "parameters"}: how the prompt lists it
  ordered_json parameters;  // its arguments' schema
};

Tool read_tool(const nlohmann::json& e, const ordered_json& ordered, const std::string& where, std::set<std::string>& names) {
  if (!e.is_object() || !e.contains("function")) fail(where, ": must be {\"type\": \"function\", \"function\": {...}}");
  for (auto& [k, v] : e.items())
    if (k != "type" && k != "function") fail(where, ": unknown field '", k.substr(0, 64), "'");
  if (e.contains("type") && e["type"] != "function") fail(where, ".type: must be \"function\"");
  const auto& f = e["function"];
  if (!f.is_object()) fail(where, ".function: must be an object with a name");
  for (auto& [k, v] : f.items()) {
    if (k != "name" && k != "description" && k != "parameters" && k != "strict") fail(where, ".function: unknown field '", k.substr(0, 64), "'");
    if (k == "description" && !v.is_string()) fail(where, ".function.description: must be a string");
    if (k == "strict" && !v.is_null() && !v.is_boolean()) fail(where, ".function.strict: must be true or false");
  }
  if (!f.contains("name") || !f["name"].is_string() || !valid_name(f["name"]))
    fail(where, ".function.name: must be 1 to 64 letters, digits, '_' or '-'");
  Tool t;
  t.name = f["name"];
  if (!names.insert(t.name).second) fail(where, ".function.name: '", t.name, "' names two tools");
  // Without parameters a function takes none, as OpenAI reads it.
  t.parameters = ordered_json{{"type", "object"}, {"properties", ordered_json::object()}};
  if (f.contains("parameters") && !f["parameters"].is_null()) t.parameters = ordered.at("function").at("parameters");
  if (!t.parameters.is_object() || t.parameters.value("type", ordered_json()) != "object")
    fail(where, ".function.parameters: must be a schema of an object ({\"type\": \"object\", ...})");
  try {
    compiled_schema(ordered_json_text(t.parameters));  // its own errors name places in it, not in the call schema
  } catch (const Error& err) {
    fail(where, ".function.parameters: ", err.what());
  }
  t.listing = ordered_json{{"name", t.name}};
  if (f.contains("description")) t.listing["description"] = f["description"].get<std::string>();
  t.listing["parameters"] = t.parameters;
  return t;
}

// {"name": const, "arguments": the tool's parameters}, its parameters kept under $defs (with the
// $defs they have) so that their $refs still find them.
ordered_json call_of(const Tool& t, size_t index, ordered_json& defs) {
  const std::string def = "skein_tool_" + std::to_string(index);
  ordered_json params = t.parameters;
  move_refs(params, "/$defs/" + def);
  defs[def] = std::move(params);
  return ordered_json{{"type", "object"},
                      {"properties", {{"name", {{"const", t.name}}}, {"arguments", {{"$ref", "#/$defs/" + def}}}}},
                      {"required", {"name", "arguments"}}};
}

}  // namespace

ChatTools parse_chat_tools(const nlohmann::json& j, const std::string& body, const ChatConfig& chat) {
  auto given = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  if (given("parallel_tool_calls") && !j["parallel_tool_calls"].is_boolean()) fail("parallel_tool_calls: must be true or false");
  ChatTools out;
  if (!given("tools")) {
    if (given("tool_choice") && j["tool_choice"] != "none") fail("tool_choice: needs tools");
    return out;
  }
  const auto& tools = j["tools"];
  if (!tools.is_array() || tools.empty()) fail("tools: must be a non-empty array of {\"type\": \"function\", \"function\": {...}}");
  if (tools.size() > size_t(ChatTools::kMaxTools)) fail("tools: ", tools.size(), " tools exceed the limit of ", ChatTools::kMaxTools);
  ordered_json ordered;  // the same tools, their keys in the order sent
  try {
    ordered = ordered_json::parse(body).at("tools");
  } catch (const ordered_json::exception&) {
    fail("tools: the request's text cannot be read again in order");  // it was read once: never so
  }
  std::vector<Tool> list;
  std::set<std::string> names;
  for (size_t i = 0; i < tools.size(); ++i) list.push_back(read_tool(tools[i], ordered[i], "tools[" + std::to_string(i) + "]", names));

  // tool_choice: "none", "auto" (the default with tools), "required" or {"type": "function", "function": {"name": N}}.
  out.choice = ChatTools::Choice::Auto;
  size_t named = 0;
  if (given("tool_choice")) {
    const auto& c = j["tool_choice"];
    const char* shape = "tool_choice: must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}";
    if (c.is_string()) {
      const std::string s = c;
      if (s == "none") out.choice = ChatTools::Choice::None;
      else if (s == "required") out.choice = ChatTools::Choice::Required;
      else if (s != "auto") fail(shape);
    } else if (c.is_object() && c.value("type", nlohmann::json()) == "function" && c.contains("function") && c["function"].is_object() &&
               c["function"].contains("name") && c["function"]["name"].is_string()) {
      const std::string name = c["function"]["name"];
      while (named < list.size() && list[named].name != name) ++named;
      if (named == list.size()) fail("tool_choice: no tool is named '", name.substr(0, 64), "'");
      out.choice = ChatTools::Choice::Named;
    } else {
      fail(shape);
    }
  }

  out.prompt = chat.system_prefix + chat.tools_intro;
  for (auto& t : list) {
    out.prompt += '\n';
    out.prompt += ordered_json_text(t.listing);
  }
  out.prompt += chat.separator;
  if (!out.calls()) return out;

  ordered_json defs = ordered_json::object(), schema;
  if (out.choice == ChatTools::Choice::Named) {
    schema = call_of(list[named], named, defs);
  } else if (list.size() == 1) {
    schema = call_of(list[0], 0, defs);
  } else {
    if (list.size() > size_t(ChatTools::kMaxChoosable))
      fail("tools: the model can choose among at most ", ChatTools::kMaxChoosable, " tools, got ", list.size(),
           " (name one in tool_choice, or offer fewer)");
    ordered_json branches = ordered_json::array();
    for (size_t i = 0; i < list.size(); ++i) branches.push_back(call_of(list[i], i, defs));
    schema = ordered_json{{"oneOf", std::move(branches)}, {"discriminator", {{"propertyName", "name"}}}};
  }
  schema["$defs"] = std::move(defs);
  out.call_schema = ordered_json_text(schema);
  try {
    compiled_schema(out.call_schema);  // each tool compiled alone; together they may still be too large
  } catch (const Error& err) {
    fail("tools: a call of ", out.choice == ChatTools::Choice::Named ? "the named tool" : "any of them", " cannot be followed: ", err.what());
  }
  return out;
}

std::string tool_call_text(const std::string& name, const std::string& arguments, const std::string& where) {
  ordered_json args;
  try {
    args = ordered_json::parse(arguments);
  } catch (const ordered_json::exception&) {
    fail(where, ": is not JSON text");
  }
  return ordered_json_text(ordered_json{{"name", name}, {"arguments", std::move(args)}});
}

ToolCallWatch::ToolCallWatch(const ChatTools& tools) {
  if (!tools.calls()) return;
  schema_ = compiled_schema(tools.call_schema);
  call_.emplace(*schema_);
}

std::string ToolCallWatch::feed(std::string_view text) {
  if (!call_) return std::string(text);
  held_ += text;
  for (char ch : text) {
    const bool space = ch == ' ' || ch == '\n' || ch == '\t' || ch == '\r';
    if (!begun_ && space) continue;  // before the call: the space after "Assistant:", a newline
    begun_ = true;
    if (!call_->push(uint8_t(ch))) {  // no call starts so: all of it is content
      call_.reset();
      return std::exchange(held_, {});
    }
  }
  return "";
}

ToolCallWatch::End ToolCallWatch::finish() {
  End end;
  if (call_ && call_->complete()) {
    try {
      const ordered_json call = ordered_json::parse(held_);
      end.call = ToolCall{call.at("name").get<std::string>(), ordered_json_text(call.at("arguments"))};
      held_.clear();
      return end;
    } catch (const ordered_json::exception&) {
      // the recognizer's texts all parse; were one not to, it is content
    }
  }
  call_.reset();
  end.content = std::exchange(held_, {});
  return end;
}

}  // namespace skein
