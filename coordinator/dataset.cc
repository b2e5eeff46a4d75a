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

namespace {

// The JSON object on one line. An error's message is what the dataset's error list says of
// the line (after "line N: ").
StatusOr<nlohmann::json> ParseObjectLine(std::string_view line) {
  if (const int depth = JsonNestingDepth(line); depth > kMaxJsonDepth) {
    return InvalidArgumentError("nested " + std::to_string(depth) +
                                " levels deep, more than the limit of " +
                                std::to_string(kMaxJsonDepth));
  }
  nlohmann::json obj;
  try {
    obj = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for 1e999
    return InvalidArgumentError("not valid JSON: " + Shorten(e.what()));
  }
  if (!obj.is_object()) {
    return InvalidArgumentError(std::string("not a JSON object but a ") + obj.type_name());
  }
  return obj;
}

// The fields one line's problem came from ("" for one it does not have), and whether the
// problem is graded.
struct LineFields {
  std::string question, answer, id;
  bool graded = false;
};

// The question (and context) of `obj` into `p`; `field` gets the question's field.
Status ReadQuestion(const nlohmann::json& obj, const DatasetOptions& opts, Problem* p,
                    std::string* field) {
  *field = PickField(obj, opts.question_field, kQuestionFields);
  if (field->empty()) {
    return InvalidArgumentError("no question field (looked for " +
                                CandidateList(opts.question_field, kQuestionFields) + ")");
  }
  const nlohmann::json& q = obj.at(*field);
  if (!q.is_string()) {
    return InvalidArgumentError("question field '" + *field + "' is a " + q.type_name() +
                                ", not a string");
  }
  p->question = q.get<std::string>();
  if (IsBlank(p->question)) return InvalidArgumentError("question field '" + *field + "' is empty");
  if (obj.contains(kContextField) && obj.at(kContextField).is_string()) {
    p->context = obj.at(kContextField).get<std::string>();
  }
  return Status::Ok();
}

// The gold answer of `obj` into `p`; `fields->answer` gets its field and `fields->graded`
// whether the problem is graded: as the dataset is (`dataset_graded`), or for the first
// problem (nullopt), when it has a gold answer or --answer-field names one.
Status ReadGold(const nlohmann::json& obj, const DatasetOptions& opts,
                std::optional<bool> dataset_graded, Problem* p, LineFields* fields) {
  fields->answer = PickField(obj, opts.answer_field, kAnswerFields);
  const std::string& afield = fields->answer;
  if (!afield.empty()) {
    p->gold_raw = obj.at(afield);
    auto gold = GoldFromJson(p->gold_raw, afield, opts.gold_format);
    if (!gold.ok()) return gold.status();
    p->gold = std::move(gold).value();
  }
  // A graded dataset (its first problem has a gold answer, or --answer-field names one)
  // needs one on every line: a problem without it could only ever count as wrong.
  // With require_gold (canopy label) every line needs one, whatever the first one has.
  fields->graded = opts.require_gold ||
                   dataset_graded.value_or(!p->gold.empty() || !opts.answer_field.empty());
  if (fields->graded && p->gold.empty()) {
    return InvalidArgumentError(
        (afield.empty() ? "no gold field (looked for " +
                              CandidateList(opts.answer_field, kAnswerFields) + ")"
                        : "gold field '" + afield + "' holds no answer") +
        (opts.require_gold ? "; labelling needs a gold answer for every problem" : ""));
  }
  return Status::Ok();
}

// The id of `obj` (its id field stringified, else the line number) into `p`; `field` gets
// the id's field.
Status ReadId(const nlohmann::json& obj, const DatasetOptions& opts, Problem* p,
              std::string* field) {
  *field = PickField(obj, opts.id_field, kIdFields);
  if (!field->empty() && !obj.at(*field).is_null()) {
    const nlohmann::json& id = obj.at(*field);
    if (id.is_object() || id.is_array()) {
      return InvalidArgumentError("id field '" + *field + "' is a " + id.type_name());
    }
    p->id = id.is_string() ? id.get<std::string>() : id.dump();
  } else if (!opts.id_field.empty()) {
    return InvalidArgumentError("no id field '" + opts.id_field + "'");
  } else {
    p->id = std::to_string(p->line_number);
  }
  return Status::Ok();
}

// The problem on line `line_number` (its JSON object `obj`); an error says why the line is
// refused. `dataset_graded`: as ReadGold.
StatusOr<Problem> ReadProblem(const nlohmann::json& obj, int64_t line_number,
                              const DatasetOptions& opts, std::optional<bool> dataset_graded,
                              LineFields* fields) {
  Problem p;
  p.line_number = line_number;
  CANOPY_RETURN_IF_ERROR(ReadQuestion(obj, opts, &p, &fields->question));
  CANOPY_RETURN_IF_ERROR(ReadGold(obj, opts, dataset_graded, &p, fields));
  CANOPY_RETURN_IF_ERROR(ReadId(obj, opts, &p, &fields->id));
  return p;
}

}  // namespace

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
    StatusOr<nlohmann::json> obj = ParseObjectLine(line);
    if (!obj.ok()) {
      error(obj.status().message());
      continue;
    }
    LineFields fields;
    StatusOr<Problem> p =
        ReadProblem(*obj, line_number, opts,
                    good == 0 ? std::nullopt : std::optional<bool>(ds.graded), &fields);
    if (!p.ok()) {
      error(p.status().message());
      continue;
    }
    auto [it, inserted] = id_lines.emplace(p->id, line_number);
    if (!inserted) {
      error("duplicate id '" + Shorten(p->id, 60) + "' (first on line " +
            std::to_string(it->second) + ")");
      continue;
    }

    if (good == 0) {
      ds.graded = fields.graded;
      ds.question_field = fields.question;
      ds.answer_field = fields.answer;
      ds.id_field = fields.id;
      if (!family) family = TaskFamilyFromFields(*obj, *p, fields.question);
    }
    ++good;
    if (good <= opts.offset) continue;
    ds.problems.push_back(std::move(p).value());
  }
  ds.family = family.value_or(TaskFamily::kCompetitionMath);
  return ds;
}

StatusOr<Dataset> ReadDataset(const std::string& path, const DatasetOptions& opts) {
  CANOPY_ASSIGN_OR_RETURN(std::string contents, ReadFileToString(path));
  return ParseDataset(contents, path, opts);
}

}  // namespace canopy
