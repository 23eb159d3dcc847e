#include "coordinator/eval_tasks.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/json_text.h"
#include "common/refuse_folder.h"

namespace skein {

namespace {
// Line n of a .jsonl file; errors name the file and line.
nlohmann::json json_line(const std::string& line, const std::string& path, size_t n) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ":", n, ": not JSON (", json_parse_failure(e), ")");
  }
}

std::string text_of_line(const std::string& line, const std::string& path, size_t n) {
  const nlohmann::json j = json_line(line, path, n);
  if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) fail(path, ":", n, ": expected {\"text\": \"...\"}");
  return j["text"];
}

// A line of only spaces, tabs or a CR (a blank line of a CRLF file) holds no record, as an empty one.
bool blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }
}  // namespace

std::vector<LambadaDoc> read_lambada(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path);
  if (!f) fail(path, ": cannot read the LAMBADA data");
  std::vector<LambadaDoc> out;
  std::string line;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (blank(line)) continue;
    std::string text = text_of_line(line, path, n);
    size_t sp = text.rfind(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == text.size()) fail(path, ":", n, ": the text needs a context and a last word");
    out.push_back({text.substr(0, sp), text.substr(sp)});
  }
  if (out.empty()) fail(path, ": no documents");
  return out;
}

std::vector<ScoreItem> lambada_items(const std::vector<LambadaDoc>& docs, const Tokenizer& tok, int32_t pad_token) {
  std::vector<ScoreItem> out;
  for (auto& d : docs) {
    ScoreItem it;
    it.tokens.push_back(pad_token);
    auto ctx = tok.encode(d.context), tgt = tok.encode(d.target);
    it.tokens.insert(it.tokens.end(), ctx.begin(), ctx.end());
    it.first_target = it.tokens.size();
    it.tokens.insert(it.tokens.end(), tgt.begin(), tgt.end());
    out.push_back(std::move(it));
  }
  return out;
}

std::vector<ChoiceDoc> read_choices(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path);
  if (!f) fail(path, ": cannot read the multiple-choice data");
  std::vector<ChoiceDoc> out;
  std::string line;
  for (size_t n = 1; std::getline(f, line); ++n) {
    if (blank(line)) continue;
    nlohmann::json j = json_line(line, path, n);
    const char* shape = "expected {\"context\": \"...\", \"choices\": [\"...\", ...], \"label\": <index of the right choice>}";
    if (!j.is_object() || !j.contains("context") || !j["context"].is_string() || !j.contains("choices") || !j["choices"].is_array() ||
        !j.contains("label") || !j["label"].is_number_integer())
      fail(path, ":", n, ": ", shape);
    ChoiceDoc d;
    d.context = j["context"];
    for (auto& c : j["choices"]) {
      if (!c.is_string() || c.get<std::string>().empty()) fail(path, ":", n, ": every choice must be a non-empty string");
      d.choices.push_back(c);
    }
    if (d.choices.size() < 2) fail(path, ":", n, ": a document needs two choices or more");
    const int64_t label = j["label"].get<int64_t>();
    if (label < 0 || label >= int64_t(d.choices.size())) fail(path, ":", n, ": label ", label, " is not the index of one of the ", d.choices.size(), " choices");
    d.label = size_t(label);
    out.push_back(std::move(d));
  }
  if (out.empty()) fail(path, ": no documents");
  return out;
}

std::vector<ScoreItem> choice_items(const std::vector<ChoiceDoc>& docs, const Tokenizer& tok, int32_t pad_token) {
  std::vector<ScoreItem> out;
  for (auto& d : docs) {
    std::vector<int32_t> prefix = {pad_token};
    auto ctx = tok.encode(d.context);
    prefix.insert(prefix.end(), ctx.begin(), ctx.end());
    for (auto& c : d.choices) {
      ScoreItem it;
      it.tokens = prefix;
      it.first_target = prefix.size();
      auto t = tok.encode(c);
      it.tokens.insert(it.tokens.end(), t.begin(), t.end());
      out.push_back(std::move(it));
    }
  }
  return out;
}

ChoicePick pick_choice(const ChoiceDoc& doc, const std::vector<double>& logprobs) {
  ChoicePick p;
  auto chars = [](const std::string& s) { return double(std::count_if(s.begin(), s.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; })); };
  for (size_t i = 1; i < logprobs.size(); ++i) {
    if (logprobs[i] > logprobs[p.best]) p.best = i;
    if (logprobs[i] / chars(doc.choices[i]) > logprobs[p.best_norm] / chars(doc.choices[p.best_norm])) p.best_norm = i;
  }
  return p;
}

std::vector<std::string> read_corpus(const std::string& path) {
  refuse_folder(path);
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, ": cannot read the corpus");
  std::vector<std::string> docs;
  if (path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0) {
    std::string line;
    for (size_t n = 1; std::getline(f, line); ++n)
      if (!blank(line)) docs.push_back(text_of_line(line, path, n));
  } else {
    std::stringstream s;
    s << f.rdbuf();
    docs.push_back(s.str());
  }
  if (docs.empty()) fail(path, ": no documents");
  return docs;
}

std::vector<ScoreItem> perplexity_items(const std::vector<std::string>& docs, const Tokenizer& tok, int context, int stride) {
  if (context < 2) fail("eval: --context must be at least 2");
  if (stride < 1 || stride > context - 1) fail("eval: --stride must be between 1 and context - 1 (", context - 1, ")");
  std::vector<ScoreItem> out;
  for (auto& d : docs) {
    auto t = tok.encode(d);
    if (t.size() < 2) continue;
    for (size_t s = 0;; s += size_t(stride)) {
      size_t end = std::min(t.size(), s + size_t(context));
      ScoreItem it;
      it.tokens.assign(t.begin() + long(s), t.begin() + long(end));
      // The first window scores all but its first token; later ones what the previous did not cover.
      size_t covered = s == 0 ? 1 : (s - size_t(stride) + size_t(context)) - s;
      it.first_target = std::min(covered, it.tokens.size() - 1);
      if (s > 0 && covered >= it.tokens.size()) break;
      out.push_back(std::move(it));
      if (end == t.size()) break;
    }
  }
  if (out.empty()) fail("eval: the corpus has no text to score");
  return out;
}

}  // namespace skein
