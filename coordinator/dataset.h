// Reading a problem set: JSONL, one problem per line, with the field names of the common
// math and proof benchmarks recognised (see data/README.md) and
// overridable. A malformed line is reported and skipped, never fatal: a 1319-problem run
// should not die on line 812.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "search/answer.h"

namespace canopy {

// What kind of problems a dataset holds; picks the default prompt and how answers are read.
enum class TaskFamily {
  kArithmetic,       // word problems with a number for an answer: GSM8K, MAWPS
  kCompetitionMath,  // MATH, Minerva, OlympiadBench, AIME: LaTeX answers in \boxed{}
  kProof,            // formal statements to prove: miniF2F (Metamath)
};

// "arithmetic", "competition-math", "proof".
const char* TaskFamilyName(TaskFamily family);
// Accepts the names above, plus "math" and "competition_math".
StatusOr<TaskFamily> ParseTaskFamily(std::string_view name);

// The family a file's name suggests (gsm8k, mawps, svamp, asdiv -> arithmetic; minif2f,
// metamath, lean -> proof; math, minerva, olympiad, aime, amc -> competition math), or
// nullopt when the name says nothing.
std::optional<TaskFamily> TaskFamilyFromFileName(std::string_view path);

struct Problem {
  std::string id;           // the id field stringified, else the 1-based line number
  int64_t line_number = 0;  // 1-based line in the file
  std::string question;     // the question text, as in the file
  std::string context;      // shared context (OlympiadBench `context`); "" when none
  std::string gold;         // the gold answer extracted from the gold field; "" when none
  nlohmann::json gold_raw;  // the gold field as it is in the file; null when absent
};

// A line that could not be used. `message` names the line and what is wrong with it.
struct DatasetError {
  int64_t line_number = 0;
  std::string message;
};

struct DatasetOptions {
  // Field names; "" detects them per line from the candidates below, first present wins.
  //   question: question, problem, input, statement_mm
  //   gold:     answer, target, final_answer, solution
  //   id:       id, idx, name, problem_id
  std::string question_field;
  std::string answer_field;
  std::string id_field;
  // How to read the gold field; nullopt picks by field: a string containing "####" is
  // GSM8K, a field named `solution` is boxed, anything else is plain.
  std::optional<GoldFormat> gold_format;
  // nullopt detects it from the file name, then from the fields of the first problem.
  std::optional<TaskFamily> task_family;
  // Every problem must have a gold answer, whatever the first one has: a line without one
  // is an error (canopy label, whose labels are measured against the gold).
  bool require_gold = false;
  int64_t offset = 0;  // skip this many good problems
  int64_t limit = -1;  // keep at most this many (after the offset); negative = all
};

struct Dataset {
  std::string path;
  TaskFamily family = TaskFamily::kCompetitionMath;
  std::vector<Problem> problems;
  // Malformed lines and duplicate ids, in file order, up to where reading stopped (the
  // limit). Blank lines are not errors.
  std::vector<DatasetError> errors;
  // Whether problems carry gold answers, decided by the first good problem (or by an
  // answer field named in the options): in a graded dataset a line without a gold answer is
  // an error; an ungraded one is solved without accuracy.
  bool graded = true;
  // The fields used for the first problem read (for logs and summary.json).
  std::string question_field;
  std::string answer_field;
  std::string id_field;
};

// Reads `path`. A file that cannot be opened is a Status error; bad lines are recorded in
// `Dataset::errors` and skipped.
StatusOr<Dataset> ReadDataset(const std::string& path, const DatasetOptions& opts = {});

// Parses JSONL held in memory; `path` only names the source (and suggests the family).
StatusOr<Dataset> ParseDataset(std::string_view contents, const std::string& path,
                               const DatasetOptions& opts = {});

// The gold answer inside one field value: strings through GoldAnswer(); numbers as their
// JSON text (39, 43.0); lists element by element, then joined with ", " for plain answers
// or the first non-empty one for solutions. `field` is the field's name (for the default
// format). InvalidArgument for objects.
StatusOr<std::string> GoldFromJson(const nlohmann::json& value, std::string_view field,
                                   std::optional<GoldFormat> format);

}  // namespace canopy
