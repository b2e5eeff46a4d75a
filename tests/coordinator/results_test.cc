// ctest-labels: unit
#include "coordinator/results.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/mapped_file.h"
#include "tests/testing/fault_env.h"
#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

namespace fs = std::filesystem;

class ResultsTest : public ::testing::Test {
 protected:
  std::string ResultsPath() const { return dir_ + "/results.jsonl"; }
  std::string Contents() const {
    auto s = ReadFileToString(ResultsPath());
    return s.ok() ? *s : "<missing>";
  }
  void AppendRaw(const std::string& bytes) {
    std::ofstream(ResultsPath(), std::ios::binary | std::ios::app) << bytes;
  }

  const testing::ScopedTempDir tmp_{"results_test", /*create=*/false};  // Open creates it
  const std::string dir_ = tmp_.str();
};

ResultRecord Record(const std::string& id, bool correct, int64_t tokens, double seconds) {
  ResultRecord r;
  r.id = id;
  r.question = "What is " + id + "?";
  r.prediction = correct ? "42" : "41";
  r.gold = "42";
  r.correct = correct;
  r.strategy = "beam/policy-logprob";
  r.score = -0.25;
  r.tokens = tokens;
  r.expansions = 3;
  r.seconds = seconds;
  r.path = {"Step one.", "So the answer is \\boxed{42}."};
  return r;
}

TEST_F(ResultsTest, JsonRoundTripWithExtras) {
  ResultRecord r = Record("7", true, 120, 1.5);
  nlohmann::json j = ResultToJson(r);
  for (const char* key : {"id", "question", "prediction", "gold", "correct", "strategy", "score",
                          "tokens", "expansions", "seconds", "path"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  // Extras are written only when set.
  for (const char* key : {"budget_exhausted", "stop_reason", "votes", "num_candidates", "oracle", "candidates",
                          "error"}) {
    EXPECT_FALSE(j.contains(key)) << key;
  }
  r.budget_exhausted = true;
  r.stop_reason = "token budget";
  r.votes = {{"42", 3}, {"41", 1.5}};
  r.num_candidates = 8;
  r.oracle = true;
  r.candidates = {{"42", 0.75, false, 17}, {"41", -1.5, true, std::nullopt}};
  r.difficulty = 0.75;
  r.allocation = "hopeless";
  r.error = "worker 2 died";
  const std::string line = ResultToLine(r);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = ResultFromJson(nlohmann::json::parse(line));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, "7");
  EXPECT_EQ(back->question, r.question);
  EXPECT_TRUE(back->correct);
  EXPECT_EQ(back->tokens, 120);
  EXPECT_EQ(back->expansions, 3);
  EXPECT_DOUBLE_EQ(back->score, -0.25);
  EXPECT_DOUBLE_EQ(back->seconds, 1.5);
  EXPECT_EQ(back->path, r.path);
  EXPECT_EQ(back->budget_exhausted, true);
  EXPECT_EQ(back->stop_reason, "token budget");
  EXPECT_EQ(back->votes, r.votes);
  EXPECT_EQ(back->num_candidates, 8);
  EXPECT_EQ(back->oracle, true);
  ASSERT_EQ(back->candidates.size(), 2u);
  EXPECT_EQ(back->candidates[1].answer, "41");
  EXPECT_DOUBLE_EQ(back->candidates[1].score, -1.5);
  EXPECT_TRUE(back->candidates[1].correct);
  EXPECT_FALSE(back->candidates[0].correct);
  EXPECT_EQ(back->candidates[0].tokens, 17);
  EXPECT_FALSE(back->candidates[1].tokens.has_value());
  EXPECT_EQ(back->difficulty, 0.75);
  EXPECT_EQ(back->allocation, "hopeless");
  EXPECT_EQ(back->error, "worker 2 died");
  for (const char* c : {R"(["7", 0.5, true, -1])", R"(["7", 0.5, true, 1.5])", R"(["7", 0.5, true, 3, 4])"}) {
    auto b = ResultFromJson(nlohmann::json::parse(std::string(R"({"id": "1", "candidates": [)") + c + "]}"));
    EXPECT_FALSE(b.ok()) << c;
  }
  // A candidate that is not [answer, score, correct] is refused, naming the field.
  auto bad = ResultFromJson(nlohmann::json::parse(R"({"id": "1", "candidates": [["7", 0.5]]})"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().ToString().find("candidate"), std::string::npos);

  EXPECT_FALSE(ResultFromJson(nlohmann::json::parse(R"({"tokens": 5})")).ok());  // no id
  EXPECT_FALSE(ResultFromJson(nlohmann::json::parse(R"({"id": "1", "tokens": "x"})")).ok());
  EXPECT_FALSE(ResultFromJson(nlohmann::json::parse("[1]")).ok());
}

TEST_F(ResultsTest, InvalidUtf8IsReplacedNotThrown) {
  ResultRecord r = Record("1", false, 1, 0);
  r.path = {"cut mid-character: \xE2\x82"};
  const std::string line = ResultToLine(r);
  auto back = ResultFromJson(nlohmann::json::parse(line));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->path[0], "cut mid-character: \xEF\xBF\xBD");
}

TEST_F(ResultsTest, WriteThenLoad) {
  {
    LoadedResults loaded;
    auto w = ResultsWriter::Open(dir_, &loaded);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_TRUE(loaded.records.empty());
    EXPECT_EQ((*w)->path(), ResultsPath());
    ASSERT_TRUE((*w)->Append(Record("a", true, 100, 2)).ok());
    ASSERT_TRUE((*w)->Append(Record("b", false, 300, 4)).ok());
    EXPECT_EQ((*w)->appended(), 2);
    // Each append is on disk as soon as it returns, before the writer closes.
    auto mid = LoadResults(ResultsPath());
    ASSERT_TRUE(mid.ok());
    EXPECT_EQ(mid->records.size(), 2u);
  }
  const std::string text = Contents();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2);
  EXPECT_EQ(text.back(), '\n');

  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_EQ(loaded->records.size(), 2u);
  EXPECT_EQ(loaded->records[0].id, "a");
  EXPECT_TRUE(loaded->records[0].correct);
  EXPECT_EQ(loaded->records[1].id, "b");
  EXPECT_EQ(loaded->records[1].tokens, 300);
  EXPECT_TRUE(loaded->issues.empty());
  EXPECT_FALSE(loaded->torn_tail());
  EXPECT_EQ(loaded->valid_bytes, text.size());

  // Reopening appends after what is there.
  LoadedResults again;
  auto w = ResultsWriter::Open(dir_, &again);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(again.records.size(), 2u);
  ASSERT_TRUE((*w)->Append(Record("c", true, 50, 1)).ok());
  EXPECT_EQ(LoadResults(ResultsPath())->records.size(), 3u);
}

TEST_F(ResultsTest, MissingFile) {
  auto loaded = LoadResults(dir_ + "/results.jsonl");
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), StatusCode::kNotFound);
}

TEST_F(ResultsTest, ResumeAfterTornLastLine) {
  {
    auto w = ResultsWriter::Open(dir_);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(Record("a", true, 100, 2)).ok());
    ASSERT_TRUE((*w)->Append(Record("b", false, 300, 4)).ok());
  }
  const std::string good = Contents();
  // The process died in the middle of writing record "c".
  const std::string full_c = ResultToLine(Record("c", true, 7, 1));
  AppendRaw(full_c.substr(0, full_c.size() / 2));

  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->records.size(), 2u);
  EXPECT_TRUE(loaded->torn_tail());
  EXPECT_EQ(loaded->valid_bytes, good.size());
  ASSERT_EQ(loaded->issues.size(), 1u);
  EXPECT_TRUE(loaded->issues[0].starts_with("line 3: not valid JSON")) << loaded->issues[0];
  EXPECT_NE(loaded->issues[0].find("torn tail"), std::string::npos);

  // Opening the writer cuts the garbage; the next record starts on a clean line.
  LoadedResults resumed;
  auto w = ResultsWriter::Open(dir_, &resumed);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(resumed.records.size(), 2u);
  EXPECT_EQ(Contents(), good);
  ASSERT_TRUE((*w)->Append(Record("c", true, 7, 1)).ok());
  EXPECT_EQ(Contents(), good + full_c + "\n");
  auto after = LoadResults(ResultsPath());
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->records.size(), 3u);
  EXPECT_TRUE(after->issues.empty());
  EXPECT_FALSE(after->torn_tail());
}

TEST_F(ResultsTest, OnlyAnUnterminatedLastLineIsATornTail) {
  fs::create_directories(dir_);
  const std::string a = ResultToLine(Record("a", true, 1, 1));
  const std::string b = ResultToLine(Record("b", true, 1, 1));
  // Complete garbled lines (2 and 4) are not a torn tail: they are skipped and counted; the
  // unterminated last line (6) is the torn tail.
  const std::string text = a + "\n{\"id\": \"x\", \x01\n" + b + "\n{\"id\":\n\n{\"i";
  AppendRaw(text);
  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->records.size(), 2u);
  ASSERT_EQ(loaded->issues.size(), 3u);
  EXPECT_TRUE(loaded->issues[0].starts_with("line 2:"));
  EXPECT_NE(loaded->issues[0].find("not a canopy result record"), std::string::npos);
  EXPECT_TRUE(loaded->issues[1].starts_with("line 4:"));
  EXPECT_TRUE(loaded->issues[2].starts_with("line 6:"));
  EXPECT_NE(loaded->issues[2].find("torn tail"), std::string::npos);
  EXPECT_EQ(loaded->foreign_lines, 2);
  EXPECT_EQ(loaded->first_foreign_line, 2);
  EXPECT_EQ(loaded->valid_bytes, text.size() - 3);
  // Such a file is not canopy's own: the writer refuses it and changes nothing.
  auto w = ResultsWriter::Open(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(w.status().message().find("line 2"), std::string::npos) << w.status().ToString();
  EXPECT_EQ(Contents(), text);

  // A complete last record without its newline is kept; the writer ends its line first.
  fs::remove(ResultsPath());
  AppendRaw(a + "\n" + b);
  loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->records.size(), 2u);
  EXPECT_FALSE(loaded->torn_tail());
  w = ResultsWriter::Open(dir_);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Record("c", false, 1, 1)).ok());
  loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->records.size(), 3u);
  EXPECT_TRUE(loaded->issues.empty());
}

TEST_F(ResultsTest, AUsersOwnFileIsRefusedAndUntouched) {
  fs::create_directories(dir_);
  const std::string mine = "name,score\nalice,3\nbob,4\n";
  AppendRaw(mine);
  auto w = ResultsWriter::Open(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("did not write"), std::string::npos) << w.status().ToString();
  EXPECT_EQ(Contents(), mine);
}

TEST_F(ResultsTest, ASymbolicLinkIsRefusedNotFollowed) {
  fs::create_directories(dir_);
  const std::string target = dir_ + "/elsewhere.txt";
  const std::string theirs = ResultToLine(Record("a", true, 1, 1)) + "\n{\"torn";
  { std::ofstream(target, std::ios::binary) << theirs; }
  fs::create_symlink(target, ResultsPath());
  auto w = ResultsWriter::Open(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("symbolic link"), std::string::npos) << w.status().ToString();
  std::ifstream in(target, std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), theirs);
  // A link to a device that never ends (resume would read without end) is refused too.
  fs::remove(ResultsPath());
  fs::create_symlink("/dev/full", ResultsPath());
  w = ResultsWriter::Open(dir_);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("symbolic link"), std::string::npos);
}

TEST_F(ResultsTest, AFloatWhereAnIntegerBelongsIsAnIssueNotUndefinedBehaviour) {
  // Found by tests/fuzz/results_fuzzer (UBSan: 1.3e113 converted to long).
  LoadedResults r = ParseResults("{\"id\": \"a\", \"tokens\": 1.3e113}\n{\"id\": \"b\", \"tokens\": 7}\n");
  ASSERT_EQ(r.records.size(), 1u);
  EXPECT_EQ(r.records[0].tokens, 7);
  ASSERT_EQ(r.issues.size(), 1u);
  EXPECT_NE(r.issues[0].find("'tokens' is not an integer"), std::string::npos) << r.issues[0];
}

TEST_F(ResultsTest, DeeplyNestedLineIsReportedNotCrashed) {
  fs::create_directories(dir_);
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  AppendRaw(ResultToLine(Record("a", true, 1, 1)) + "\n" + deep + "\n");
  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->records.size(), 1u);
  ASSERT_EQ(loaded->issues.size(), 1u);
  EXPECT_NE(loaded->issues[0].find("nested 100000 levels"), std::string::npos) << loaded->issues[0];
}

TEST_F(ResultsTest, DuplicateIdLaterWins) {
  fs::create_directories(dir_);
  AppendRaw(ResultToLine(Record("a", false, 1, 1)) + "\n" + ResultToLine(Record("b", true, 2, 1)) +
            "\n" + ResultToLine(Record("a", true, 3, 1)) + "\n");
  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->records.size(), 2u);
  EXPECT_EQ(loaded->records[0].id, "a");
  EXPECT_TRUE(loaded->records[0].correct);
  EXPECT_EQ(loaded->records[0].tokens, 3);
  ASSERT_EQ(loaded->issues.size(), 1u);
  EXPECT_NE(loaded->issues[0].find("duplicate id 'a'"), std::string::npos);
}

TEST_F(ResultsTest, Summary) {
  std::vector<ResultRecord> records = {Record("a", true, 100, 2), Record("b", false, 300, 4),
                                       Record("c", true, 200, 4), Record("d", true, 400, 6)};
  records[1].error = "boom";
  records[2].budget_exhausted = true;
  Summary s = Summarize(records);
  EXPECT_EQ(s.num_problems, 4);
  EXPECT_EQ(s.num_correct, 3);
  EXPECT_EQ(s.num_errors, 1);
  EXPECT_EQ(s.num_budget_exhausted, 1);
  EXPECT_DOUBLE_EQ(s.accuracy, 0.75);
  EXPECT_EQ(s.total_tokens, 1000);
  EXPECT_DOUBLE_EQ(s.mean_tokens, 250);
  EXPECT_EQ(s.total_expansions, 12);
  EXPECT_DOUBLE_EQ(s.total_seconds, 16);
  EXPECT_DOUBLE_EQ(s.tokens_per_second, 62.5);
  s = Summarize(records, /*wall_seconds=*/5);
  EXPECT_DOUBLE_EQ(s.wall_seconds, 5);
  EXPECT_DOUBLE_EQ(s.tokens_per_second, 200);

  // The oracle: written only when some record carries it.
  EXPECT_FALSE(s.has_oracle);
  EXPECT_TRUE(SummaryToJson(s)["oracle_accuracy"].is_null());
  records[0].oracle = true, records[1].oracle = true, records[2].oracle = false;
  Summary o = Summarize(records);
  EXPECT_EQ(o.num_oracle, 2);
  EXPECT_DOUBLE_EQ(SummaryToJson(o)["oracle_accuracy"].get<double>(), 0.5);

  // Difficulty bins: only records with a difficulty, bin 1 easiest, in order.
  EXPECT_FALSE(SummaryToJson(o).contains("difficulty_bins"));
  records[0].difficulty = 0.0, records[1].difficulty = 0.75, records[2].difficulty = 0.7;
  records[0].num_candidates = 4, records[1].num_candidates = 8, records[2].num_candidates = 16;
  const nlohmann::json bins = SummaryToJson(Summarize(records))["difficulty_bins"];
  ASSERT_EQ(bins.size(), 2u);
  EXPECT_EQ(bins[0]["bin"], 1);
  EXPECT_EQ(bins[0]["problems"], 1);
  EXPECT_DOUBLE_EQ(bins[0]["accuracy"].get<double>(), 1.0);
  EXPECT_EQ(bins[1]["bin"], 4);
  EXPECT_EQ(bins[1]["problems"], 2);
  EXPECT_DOUBLE_EQ(bins[1]["accuracy"].get<double>(), 0.5);
  EXPECT_EQ(bins[1]["tokens"], 500);
  EXPECT_DOUBLE_EQ(bins[1]["mean_samples"].get<double>(), 12.0);

  Summary empty = Summarize({});
  EXPECT_EQ(empty.num_problems, 0);
  EXPECT_EQ(empty.accuracy, 0);
  EXPECT_EQ(empty.tokens_per_second, 0);

  fs::create_directories(dir_);
  const std::string path = dir_ + "/summary.json";
  nlohmann::json settings = {{"strategy", "beam"}, {"width", 4}};
  ASSERT_TRUE(WriteSummaryJson(path, s, settings).ok());
  ASSERT_TRUE(WriteSummaryJson(path, s, settings).ok());  // replaces, does not append
  auto text = ReadFileToString(path);
  ASSERT_TRUE(text.ok());
  nlohmann::json j = nlohmann::json::parse(*text);
  EXPECT_EQ(j["settings"], settings);
  EXPECT_EQ(j["summary"]["num_problems"], 4);
  EXPECT_EQ(j["summary"]["num_correct"], 3);
  EXPECT_DOUBLE_EQ(j["summary"]["accuracy"].get<double>(), 0.75);
  EXPECT_EQ(j["summary"]["total_tokens"], 1000);
  EXPECT_DOUBLE_EQ(j["summary"]["tokens_per_second"].get<double>(), 200);
  // No temp file is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
  EXPECT_EQ(files, 1);

  EXPECT_FALSE(WriteSummaryJson(dir_ + "/no/such/dir/summary.json", s, settings).ok());
}

// NOTE the faults below come from tests/testing/fault_env.h: a realistic full disk stores
// part of a line (a short write) and then fails the next write with ENOSPC, so the file
// holds half a record at the moment the error comes back.

using ::canopy::testing::FaultInjectionEnv;
using ::canopy::testing::FaultOp;

std::string Lines(std::initializer_list<ResultRecord> records) {
  std::string text;
  for (const auto& r : records) text += ResultToLine(r) + "\n";
  return text;
}

TEST_F(ResultsTest, AnAppendThatHitsAFullDiskLeavesOnlyWholeLines) {
  FaultInjectionEnv env;
  auto w = ResultsWriter::Open(dir_, nullptr, &env);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_TRUE((*w)->Append(Record("a", true, 100, 2)).ok());
  ASSERT_TRUE((*w)->Append(Record("b", false, 300, 4)).ok());

  env.ShortWrite(1, 10);
  env.Fail(FaultOp::kWrite, 2, ENOSPC);
  Status s = (*w)->Append(Record("c", true, 7, 1));
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), ResultsPath() + ": write: No space left on device");
  EXPECT_EQ((*w)->appended(), 2);
  // Not half of "c": the earlier records, whole, and nothing else.
  EXPECT_EQ(Contents(), Lines({Record("a", true, 100, 2), Record("b", false, 300, 4)}));

  // Room again: the next record follows on a line of its own.
  ASSERT_TRUE((*w)->Append(Record("d", true, 9, 1)).ok());
  EXPECT_EQ((*w)->appended(), 3);
  auto loaded = LoadResults(ResultsPath());
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->records.size(), 3u);
  EXPECT_EQ(loaded->records[0].id, "a");
  EXPECT_EQ(loaded->records[1].id, "b");
  EXPECT_EQ(loaded->records[2].id, "d");
  EXPECT_TRUE(loaded->issues.empty());
  EXPECT_FALSE(loaded->torn_tail());
}

TEST_F(ResultsTest, ADiskThatStaysFullFailsEveryAppendCleanly) {
  FaultInjectionEnv env;
  auto w = ResultsWriter::Open(dir_, nullptr, &env);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Record("a", true, 1, 1)).ok());
  const std::string before = Contents();
  env.Fail(FaultOp::kWrite, 1, ENOSPC, /*times=*/1000);
  for (const char* id : {"b", "c", "d"}) {
    Status s = (*w)->Append(Record(id, true, 1, 1));
    EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s.ToString();
    EXPECT_EQ(Contents(), before);
  }
  env.Clear();
  ASSERT_TRUE((*w)->Append(Record("e", true, 1, 1)).ok());
  EXPECT_EQ(Contents(), before + Lines({Record("e", true, 1, 1)}));
}

TEST_F(ResultsTest, ShortWritesAreRetriedToAWholeRecord) {
  FaultInjectionEnv env;
  auto w = ResultsWriter::Open(dir_, nullptr, &env);
  ASSERT_TRUE(w.ok());
  env.ShortWrite(1, 1);
  env.ShortWrite(2, 17);
  env.ShortWrite(3, 5);
  ASSERT_TRUE((*w)->Append(Record("a", true, 100, 2)).ok());
  EXPECT_EQ(env.calls(FaultOp::kWrite), 4);
  EXPECT_EQ(Contents(), Lines({Record("a", true, 100, 2)}));
}

TEST_F(ResultsTest, AFailedFsyncIsReportedAndTheRecordNotKept) {
  FaultInjectionEnv env;
  auto w = ResultsWriter::Open(dir_, nullptr, &env);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Record("a", true, 1, 1)).ok());
  env.Fail(FaultOp::kSync, 1, EIO);
  Status s = (*w)->Append(Record("b", true, 1, 1));
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_EQ(s.message(), ResultsPath() + ": fdatasync: Input/output error");
  EXPECT_EQ((*w)->appended(), 1);
  // "b" was written but is not known to be on disk: it is cut back, and the caller (who
  // was told it failed) may write it again without a duplicate.
  EXPECT_EQ(Contents(), Lines({Record("a", true, 1, 1)}));
  ASSERT_TRUE((*w)->Append(Record("b", true, 1, 1)).ok());
  EXPECT_EQ(Contents(), Lines({Record("a", true, 1, 1), Record("b", true, 1, 1)}));
}

TEST_F(ResultsTest, WhenCuttingBackFailsTooBothAreReportedAndReopeningMends) {
  const std::string kept = Lines({Record("a", true, 1, 1)});
  {
    FaultInjectionEnv env;
    auto w = ResultsWriter::Open(dir_, nullptr, &env);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(Record("a", true, 1, 1)).ok());
    env.ShortWrite(1, 10);
    env.Fail(FaultOp::kWrite, 2, ENOSPC);
    env.Fail(FaultOp::kTruncate, 1, EIO);
    Status s = (*w)->Append(Record("b", true, 1, 1));
    EXPECT_EQ(s.code(), StatusCode::kIoError);
    EXPECT_EQ(s.message(), ResultsPath() + ": write: No space left on device; then cutting back to " +
                               std::to_string(kept.size()) + " bytes failed too (" + ResultsPath() +
                               ": truncate: Input/output error)");
    EXPECT_EQ(Contents(), kept + ResultToLine(Record("b", true, 1, 1)).substr(0, 10));
  }
  // The next session's Open cuts the torn tail before appending.
  LoadedResults loaded;
  auto w = ResultsWriter::Open(dir_, &loaded);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(loaded.records.size(), 1u);
  EXPECT_EQ(Contents(), kept);
}

TEST_F(ResultsTest, AFailedSummaryWriteKeepsTheOldSummary) {
  fs::create_directories(dir_);
  const std::string path = dir_ + "/summary.json";
  ASSERT_TRUE(WriteSummaryJson(path, Summarize({}), {{"n", 1}}).ok());
  const std::string before = *ReadFileToString(path);
  for (FaultOp op : {FaultOp::kWrite, FaultOp::kSync, FaultOp::kRename}) {
    FaultInjectionEnv env;
    env.Fail(op, 1, ENOSPC);
    Status s = WriteSummaryJson(path, Summarize({Record("a", true, 1, 1)}), {{"n", 2}}, &env);
    EXPECT_EQ(s.code(), StatusCode::kIoError);
    EXPECT_NE(s.message().find(path), std::string::npos) << s.message();
    EXPECT_EQ(*ReadFileToString(path), before);
    int files = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++files;
    EXPECT_EQ(files, 1);
  }
}

}  // namespace
}  // namespace canopy
