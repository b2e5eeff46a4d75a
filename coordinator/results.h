// What a job writes: results.jsonl (one JSON object per finished problem, appended and
// fsync'd as each finishes, so a killed job loses nothing it finished and a restarted one
// skips what is done) and summary.json (rewritten atomically).
//
// The file is a RecordFileWriter's (coordinator/record_file.h): whole lines only, a torn
// tail cut before appending, a file canopy did not write refused.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "coordinator/record_file.h"

namespace canopy {

struct ResultRecord {
  std::string id;
  std::string question;
  std::string prediction;  // the extracted final answer; "" when none was found
  std::string gold;
  bool correct = false;
  std::string strategy;  // e.g. "beam/policy-logprob"
  double score = 0;      // the chosen answer's score under the strategy's aggregation
  int64_t tokens = 0;    // tokens generated for this problem (all branches)
  int64_t expansions = 0;
  double seconds = 0;             // wall time from first expansion to done
  std::vector<std::string> path;  // the chosen path's step texts, root first

  // Optional extras, written only when set.
  std::optional<bool> budget_exhausted;
  std::optional<std::string> stop_reason;
  std::map<std::string, double> votes;  // answer -> votes (or vote weight); omitted if empty
  std::optional<int64_t> num_candidates;
  // Graded only: whether any candidate's answer is equivalent to the gold (the oracle, "any
  // sample right": the headroom a better selection could reach).
  std::optional<bool> oracle;
  // With budget forcing only: the ends the chosen path had replaced by the wait text, and
  // whether its thinking was cut by the answer cue.
  std::optional<int64_t> forced_waits;
  std::optional<bool> answer_cued;
  // Sampling strategies: the difficulty (search/allocation.h, 0 easy .. 1 hard) judged from
  // the first --pilot samples, as adaptive allocation judges it, so uniform and adaptive
  // runs bin their problems alike.
  std::optional<double> difficulty;
  // Adaptive allocation only: why the problem got no more samples (settled, hopeless,
  // max_samples, budget).
  std::optional<std::string> allocation;
  // Every candidate, in the strategy's order (best-of-N: sample order): its normalized answer
  // ("" when it has none), path score, correctness and (sampling strategies) tokens, written
  // [answer, score, correct(, tokens)].
  struct Candidate {
    std::string answer;
    double score = 0;
    bool correct = false;
    std::optional<int64_t> tokens;  // sampling strategies: the sample's generated tokens
  };
  std::vector<Candidate> candidates;  // omitted if empty
  std::optional<std::string> error;  // the problem failed (e.g. a worker error)
};

// One JSON object. Invalid UTF-8 in the texts (a step cut mid-character) is replaced by
// U+FFFD when serialised, never an exception.
nlohmann::json ResultToJson(const ResultRecord& record);
// Requires `id`; other keys default when absent. InvalidArgument on wrong types.
StatusOr<ResultRecord> ResultFromJson(const nlohmann::json& j);
// ResultToJson(record) as one line, without the trailing newline.
std::string ResultToLine(const ResultRecord& record);

// The file's records as ResultRecords, and what else reading it found (RecordFileState).
struct LoadedResults : RecordFileState {
  std::vector<ResultRecord> records;  // file order; a later duplicate id replaces the earlier
};

// Reads a results.jsonl. NotFound when it does not exist. A garbled unterminated last line
// is reported in `issues` and left out of `valid_bytes`; a garbled complete line is
// reported, counted in `foreign_lines` and skipped.
StatusOr<LoadedResults> LoadResults(const std::string& path, Env* env = Env::Default());
// The same over a file's contents.
LoadedResults ParseResults(std::string_view contents);

// Appends records to DIR/results.jsonl through `env` (Env::Default() when not given), which
// must outlive the writer. Not thread-safe: one owner (the coordinator's event loop) writes.
class ResultsWriter {
 public:
  // Creates DIR (and parents) and the file if needed. An existing file is loaded first;
  // its records (for resume) and issues go to `*loaded` when given, and a torn tail is
  // truncated away before anything is appended. FailedPrecondition, with nothing changed,
  // when the file is a symbolic link or not a regular file, or holds complete lines that
  // are not result records (a file canopy did not write).
  static StatusOr<std::unique_ptr<ResultsWriter>> Open(const std::string& dir,
                                                       LoadedResults* loaded = nullptr,
                                                       Env* env = Env::Default());
  ~ResultsWriter();
  ResultsWriter(const ResultsWriter&) = delete;
  ResultsWriter& operator=(const ResultsWriter&) = delete;

  // Writes one line and fsyncs it; when this returns OK the record survives a crash. When it
  // fails (a full disk, an I/O error, a failed fsync) the IoError names the file, and the
  // file is cut back to the size it had, so it holds whole lines only and the next Append
  // starts on a fresh line. Should that cut fail too, the message says so; the next Open
  // cuts the torn tail.
  Status Append(const ResultRecord& record);
  const std::string& path() const { return file_->path(); }
  int64_t appended() const { return file_->appended(); }

 private:
  explicit ResultsWriter(std::unique_ptr<RecordFileWriter> file) : file_(std::move(file)) {}
  std::unique_ptr<RecordFileWriter> file_;
};

struct Summary {
  int64_t num_problems = 0;
  int64_t num_correct = 0;
  int64_t num_errors = 0;  // records with `error` set
  int64_t num_budget_exhausted = 0;
  int64_t num_oracle = 0;  // records whose `oracle` is true
  bool has_oracle = false;  // some record carries `oracle`
  bool graded = true;   // false: the dataset has no gold answers, accuracy means nothing
  double accuracy = 0;  // num_correct / num_problems; 0 when empty or ungraded
  int64_t total_tokens = 0;
  double mean_tokens = 0;
  int64_t total_expansions = 0;
  double total_seconds = 0;      // sum of per-problem seconds (problems overlap)
  double wall_seconds = 0;       // the job's wall time when known, else 0
  double tokens_per_second = 0;  // total_tokens / (wall_seconds, else total_seconds)
  // Per difficulty bin (DifficultyBin of the records' `difficulty`; bin 1 easiest), for
  // the bins that hold a record; empty when no record has a difficulty.
  struct Bin {
    int32_t bin = 0;
    int64_t problems = 0, correct = 0, tokens = 0, samples = 0;
  };
  std::vector<Bin> bins;
};

// `wall_seconds` > 0 gives the job's wall time, the right denominator for tokens/s when
// problems ran concurrently. An ungraded summary (a dataset without gold answers) has no
// accuracy: SummaryToJson writes null for it.
Summary Summarize(const std::vector<ResultRecord>& records, double wall_seconds = 0,
                  bool graded = true);
nlohmann::json SummaryToJson(const Summary& summary);

// Writes {"summary": ..., "settings": settings} to `path` atomically (WriteFileAtomically in
// common/env.h: temp file, fsync, rename), so a reader never sees half a file.
Status WriteSummaryJson(const std::string& path, const Summary& summary,
                        const nlohmann::json& settings, Env* env = Env::Default());

}  // namespace canopy
