#include "coordinator/dataset.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <unordered_map>

#include "common/json_depth.h"
#include "common/mapped_file.h"

namespace canopy {
namespace {

constexpr std::array<const char*, 4> kQuestionFields = {"question", "problem", "input",
                                                        "statement_mm"};
constexpr std::array<const char*, 4> kAnswerFields = {"answer", "target", "final_answer",
                                                      "solution"};
constexpr std::array<const char*, 4> kIdFields = {"id", "idx", "name", "problem_id"};
constexpr const char* kContextField = "context";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsBlank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

// The overriding field name when set, else the first candidate present in `obj`; "" when
// none is.
template <size_t N>
std::string PickField(const nlohmann::json& obj, const std::string& override_name,
                      const std::array<const char*, N>& candidates) {
  if (!override_name.empty()) return obj.contains(override_name) ? override_name : "";
  for (const char* name : candidates) {
    if (obj.contains(name)) return name;
  }
  return "";
}

std::string CandidateList(const std::string& override_name,
                          const std::array<const char*, 4>& candidates) {
  if (!override_name.empty()) return "'" + override_name + "'";
  std::string out;
  for (const char* c : candidates) out += (out.empty() ? "" : ", ") + std::string(c);
  return out;
}

std::string Shorten(std::string s, size_t max_len = 160) {
  if (s.size() > max_len) s = s.substr(0, max_len) + "...";
  return s;
}

GoldFormat DefaultGoldFormat(std::string_view field, std::string_view value) {
  if (value.find("####") != std::string_view::npos) return GoldFormat::kGsm8k;
  if (field == "solution") return GoldFormat::kBoxed;
  return GoldFormat::kPlain;
}

// The family the fields of one object suggest.
TaskFamily TaskFamilyFromFields(const nlohmann::json& obj, const Problem& p,
                                const std::string& question_field) {
  if (question_field == "statement_mm" || obj.contains("statement_mm") ||
      obj.contains("formal_statement")) {
    return TaskFamily::kProof;
  }
  if (p.gold_raw.is_number()) return TaskFamily::kArithmetic;
  if (p.gold_raw.is_string() &&
      p.gold_raw.get_ref<const std::string&>().find("####") != std::string::npos) {
    return TaskFamily::kArithmetic;
  }
  return TaskFamily::kCompetitionMath;
}

}  // namespace

const char* TaskFamilyName(TaskFamily family) {
  switch (family) {
    case TaskFamily::kArithmetic:
      return "arithmetic";
    case TaskFamily::kCompetitionMath:
      return "competition-math";
    case TaskFamily::kProof:
      return "proof";
  }
  return "?";
}

StatusOr<TaskFamily> ParseTaskFamily(std::string_view name) {
  const std::string n = Lower(name);
  if (n == "arithmetic") return TaskFamily::kArithmetic;
  if (n == "competition-math" || n == "competition_math" || n == "math") {
    return TaskFamily::kCompetitionMath;
  }
  if (n == "proof") return TaskFamily::kProof;
  return InvalidArgumentError("unknown task family '" + std::string(name) +
                              "' (expected arithmetic, competition-math or proof)");
}

std::optional<TaskFamily> TaskFamilyFromFileName(std::string_view path) {
  const size_t slash = path.find_last_of('/');
  const std::string base = Lower(slash == std::string_view::npos ? path : path.substr(slash + 1));
  auto has = [&](const char* s) { return base.find(s) != std::string::npos; };
  // Proof first: "metamath" contains "math".
  if (has("minif2f") || has("metamath") || has("lean") || has("proof")) return TaskFamily::kProof;
  if (has("gsm8k") || has("mawps") || has("svamp") || has("asdiv") || has("multiarith")) {
    return TaskFamily::kArithmetic;
  }
  if (has("math") || has("minerva") || has("olympiad") || has("aime") || has("amc")) {
    return TaskFamily::kCompetitionMath;
  }
  return std::nullopt;
}

StatusOr<std::string> GoldFromJson(const nlohmann::json& value, std::string_view field,
                                   std::optional<GoldFormat> format) {
  if (value.is_null()) return std::string();
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return GoldAnswer(s, format.value_or(DefaultGoldFormat(field, s)));
  }
  if (value.is_number() || value.is_boolean()) return value.dump();
  if (value.is_array()) {
    std::vector<std::string> parts;
    bool solution_like = false;
    for (const auto& element : value) {
      if (element.is_array() || element.is_object()) {
        return InvalidArgumentError("gold field '" + std::string(field) +
                                    "' holds a nested list or object");
      }
      if (element.is_string()) {
        GoldFormat f =
            format.value_or(DefaultGoldFormat(field, element.get_ref<const std::string&>()));
        solution_like = solution_like || f != GoldFormat::kPlain;
      }
      CANOPY_ASSIGN_OR_RETURN(std::string part, GoldFromJson(element, field, format));
      parts.push_back(std::move(part));
    }
    // Several worked solutions share one answer: take the first that has one. Several
    // plain answers (OlympiadBench's multi-answer problems) are all part of the answer.
    if (solution_like) {
      for (auto& part : parts) {
        if (!part.empty()) return std::move(part);
      }
      return std::string();
    }
    std::string joined;
    for (const auto& part : parts) {
      if (part.empty()) continue;
      joined += (joined.empty() ? "" : ", ") + part;
    }
    return joined;
  }
  return InvalidArgumentError("gold field '" + std::string(field) + "' is an object");
}

StatusOr<Dataset> ParseDataset(std::string_view contents, const std::string& path,
                               const DatasetOptions& opts) {
  if (opts.offset < 0) return InvalidArgumentError("dataset offset must be >= 0");
  Dataset ds;
  ds.path = path;
  std::optional<TaskFamily> family = opts.task_family;
  if (!family) family = TaskFamilyFromFileName(path);

  std::unordered_map<std::string, int64_t> id_lines;  // id -> line that first had it
  int64_t good = 0;                                   // good problems seen, offset included
  int64_t line_number = 0;
  size_t pos = 0;
  if (contents.substr(0, 3) == "\xEF\xBB\xBF") pos = 3;  // a UTF-8 byte-order mark
  while (pos < contents.size()) {
    if (opts.limit >= 0 && static_cast<int64_t>(ds.problems.size()) >= opts.limit) break;
    size_t end = contents.find('\n', pos);
    if (end == std::string_view::npos) end = contents.size();
    std::string_view line = contents.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (IsBlank(line)) continue;

    auto error = [&](const std::string& what) {
      ds.errors.push_back({line_number, "line " + std::to_string(line_number) + ": " + what});
    };

    if (const int depth = JsonNestingDepth(line); depth > kMaxJsonDepth) {
      error("nested " + std::to_string(depth) + " levels deep, more than the limit of " +
            std::to_string(kMaxJsonDepth));
      continue;
    }
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
      error("not valid JSON: " + Shorten(e.what()));
      continue;
    }
    if (!obj.is_object()) {
      error(std::string("not a JSON object but a ") + obj.type_name());
      continue;
    }

    Problem p;
    p.line_number = line_number;
    const std::string qfield = PickField(obj, opts.question_field, kQuestionFields);
    if (qfield.empty()) {
      error("no question field (looked for " + CandidateList(opts.question_field, kQuestionFields) +
            ")");
      continue;
    }
    const nlohmann::json& q = obj[qfield];
    if (!q.is_string()) {
      error("question field '" + qfield + "' is a " + q.type_name() + ", not a string");
      continue;
    }
    p.question = q.get<std::string>();
    if (IsBlank(p.question)) {
      error("question field '" + qfield + "' is empty");
      continue;
    }
    if (obj.contains(kContextField) && obj[kContextField].is_string()) {
      p.context = obj[kContextField].get<std::string>();
    }

    const std::string afield = PickField(obj, opts.answer_field, kAnswerFields);
    if (!afield.empty()) {
      p.gold_raw = obj[afield];
      auto gold = GoldFromJson(p.gold_raw, afield, opts.gold_format);
      if (!gold.ok()) {
        error(gold.status().message());
        continue;
      }
      p.gold = std::move(gold).value();
    }
    // A graded dataset (its first problem has a gold answer, or --answer-field names one)
    // needs one on every line: a problem without it could only ever count as wrong.
    const bool graded = opts.require_gold ||
                        (good == 0 ? !p.gold.empty() || !opts.answer_field.empty() : ds.graded);
    if (graded && p.gold.empty()) {
      error((afield.empty() ? "no gold field (looked for " +
                                  CandidateList(opts.answer_field, kAnswerFields) + ")"
                            : "gold field '" + afield + "' holds no answer") +
            (opts.require_gold ? "; labelling needs a gold answer for every problem" : ""));
      continue;
    }

    const std::string idfield = PickField(obj, opts.id_field, kIdFields);
    if (!idfield.empty() && !obj[idfield].is_null()) {
      const nlohmann::json& id = obj[idfield];
      if (id.is_object() || id.is_array()) {
        error("id field '" + idfield + "' is a " + id.type_name());
        continue;
      }
      p.id = id.is_string() ? id.get<std::string>() : id.dump();
    } else if (!opts.id_field.empty()) {
      error("no id field '" + opts.id_field + "'");
      continue;
    } else {
      p.id = std::to_string(line_number);
    }
    auto [it, inserted] = id_lines.emplace(p.id, line_number);
    if (!inserted) {
      error("duplicate id '" + Shorten(p.id, 60) + "' (first on line " +
            std::to_string(it->second) + ")");
      continue;
    }

    if (good == 0) {
      ds.graded = graded;
      ds.question_field = qfield;
      ds.answer_field = afield;
      ds.id_field = idfield;
      if (!family) family = TaskFamilyFromFields(obj, p, qfield);
    }
    ++good;
    if (good <= opts.offset) continue;
    ds.problems.push_back(std::move(p));
  }
  ds.family = family.value_or(TaskFamily::kCompetitionMath);
  return ds;
}

StatusOr<Dataset> ReadDataset(const std::string& path, const DatasetOptions& opts) {
  CANOPY_ASSIGN_OR_RETURN(std::string contents, ReadFileToString(path));
  return ParseDataset(contents, path, opts);
}

}  // namespace canopy
