// ctest-labels: unit
#include "coordinator/dataset.h"

#include "common/mapped_file.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

std::string DataFile(const std::string& name) {
  return std::string(CANOPY_DATA_DIR "/") + name;
}

Dataset MustRead(const std::string& path, const DatasetOptions& opts = {}) {
  auto ds = ReadDataset(path, opts);
  EXPECT_TRUE(ds.ok()) << ds.status().ToString();
  return ds.ok() ? std::move(ds).value() : Dataset{};
}

// A file `name` holding `contents`, in a temp folder of its own that goes with the object.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& contents)
      : dir_("dataset_test_" + name), path_(dir_.Path(name)) {
    testing::WriteStringToFile(path_, contents);
  }
  const std::string& path() const { return path_; }

 private:
  testing::ScopedTempDir dir_;
  std::string path_;
};

size_t CountEmptyGold(const Dataset& ds) {
  size_t n = 0;
  for (const auto& p : ds.problems) n += p.gold.empty();
  return n;
}

TEST(DatasetTest, Gsm8k) {
  Dataset ds = MustRead(DataFile("gsm8k.jsonl"));
  ASSERT_EQ(ds.problems.size(), 1319u);
  EXPECT_TRUE(ds.errors.empty());
  EXPECT_EQ(ds.family, TaskFamily::kArithmetic);
  EXPECT_EQ(ds.question_field, "question");
  EXPECT_EQ(ds.answer_field, "answer");
  EXPECT_EQ(ds.id_field, "idx");
  EXPECT_EQ(ds.problems[0].id, "0");
  EXPECT_EQ(ds.problems[0].line_number, 1);
  EXPECT_EQ(ds.problems[0].gold, "18");
  EXPECT_EQ(ds.problems[1].gold, "3");
  EXPECT_EQ(ds.problems[2].gold, "70000");
  EXPECT_TRUE(ds.problems[0].question.starts_with("Janet\xE2\x80\x99s ducks lay 16 eggs"));
  ASSERT_TRUE(ds.problems[0].gold_raw.is_string());
  EXPECT_TRUE(ds.problems[0].gold_raw.get<std::string>().ends_with("#### 18"));
  EXPECT_EQ(CountEmptyGold(ds), 0u);
}

TEST(DatasetTest, Mawps) {
  Dataset multi = MustRead(DataFile("mawps_multiarith.jsonl"));
  ASSERT_EQ(multi.problems.size(), 600u);
  EXPECT_TRUE(multi.errors.empty());
  EXPECT_EQ(multi.family, TaskFamily::kArithmetic);
  EXPECT_EQ(multi.question_field, "input");
  EXPECT_EQ(multi.answer_field, "target");
  EXPECT_EQ(multi.id_field, "");
  EXPECT_EQ(multi.problems[0].id, "1");  // no id field: the line number
  EXPECT_EQ(multi.problems[1].id, "2");
  EXPECT_EQ(multi.problems[0].gold, "39");
  EXPECT_EQ(multi.problems[1].gold, "8");
  EXPECT_EQ(multi.problems[2].gold, "2");
  EXPECT_TRUE(multi.problems[0].gold_raw.is_number_integer());

  Dataset addsub = MustRead(DataFile("mawps_addsub.jsonl"));
  ASSERT_EQ(addsub.problems.size(), 395u);  // the last line has no newline
  EXPECT_EQ(addsub.problems[0].gold, "43.0");
  EXPECT_EQ(addsub.problems[1].gold, "26.0");
  EXPECT_EQ(CountEmptyGold(addsub), 0u);

  Dataset singleop = MustRead(DataFile("mawps_singleop.jsonl"));
  ASSERT_EQ(singleop.problems.size(), 562u);
  EXPECT_EQ(singleop.problems[0].gold, "14.0");
}

TEST(DatasetTest, MinervaBoxed) {
  Dataset ds = MustRead(DataFile("minerva_math.jsonl"));
  ASSERT_EQ(ds.problems.size(), 272u);
  EXPECT_TRUE(ds.errors.empty());
  EXPECT_EQ(ds.family, TaskFamily::kCompetitionMath);
  EXPECT_EQ(ds.question_field, "problem");
  EXPECT_EQ(ds.answer_field, "solution");
  EXPECT_EQ(ds.problems[0].id, "0");
  EXPECT_EQ(ds.problems[0].gold, "1.6");
  EXPECT_EQ(ds.problems[1].gold, "4.5e33");
  EXPECT_EQ(ds.problems[2].gold, "41.8");
  EXPECT_EQ(ds.problems[3].gold, "20.39");
  EXPECT_EQ(CountEmptyGold(ds), 0u);
}

TEST(DatasetTest, OlympiadBench) {
  Dataset ds = MustRead(DataFile("olympiadbench.jsonl"));
  ASSERT_EQ(ds.problems.size(), 675u);
  EXPECT_TRUE(ds.errors.empty());
  EXPECT_EQ(ds.family, TaskFamily::kCompetitionMath);
  EXPECT_EQ(ds.question_field, "question");
  EXPECT_EQ(ds.answer_field, "final_answer");
  EXPECT_EQ(ds.problems[0].id, "1606");
  EXPECT_EQ(ds.problems[0].gold, "2");
  EXPECT_EQ(ds.problems[1].gold, "$\\frac{1}{2 n+2}$");
  EXPECT_EQ(ds.problems[2].gold, "$2^{1009}$");
  EXPECT_TRUE(ds.problems[0].gold_raw.is_array());
  EXPECT_EQ(ds.problems[0].context, "");  // context is null
  EXPECT_EQ(CountEmptyGold(ds), 0u);
}

TEST(DatasetTest, Aime24PrefersAnswerOverSolution) {
  Dataset ds = MustRead(DataFile("aime24.jsonl"));
  ASSERT_EQ(ds.problems.size(), 30u);
  EXPECT_EQ(ds.family, TaskFamily::kCompetitionMath);
  EXPECT_EQ(ds.question_field, "question");
  EXPECT_EQ(ds.answer_field, "answer");
  EXPECT_EQ(ds.problems[0].id, "60");
  EXPECT_EQ(ds.problems[0].gold, "204");
  EXPECT_EQ(ds.problems[1].gold, "113");
  EXPECT_EQ(ds.problems[2].gold, "371");
}

TEST(DatasetTest, MiniF2FHasNoGold) {
  for (const char* name : {"minif2f_metamath_test.jsonl", "minif2f_metamath_valid.jsonl"}) {
    Dataset ds = MustRead(DataFile(name));
    ASSERT_EQ(ds.problems.size(), 244u) << name;
    EXPECT_TRUE(ds.errors.empty());
    EXPECT_EQ(ds.family, TaskFamily::kProof);
    EXPECT_EQ(ds.question_field, "statement_mm");
    EXPECT_EQ(ds.answer_field, "");
    EXPECT_EQ(ds.id_field, "name");
    EXPECT_TRUE(ds.problems[0].question.find("@p |-") != std::string::npos);
    EXPECT_EQ(ds.problems[0].gold, "");
    EXPECT_TRUE(ds.problems[0].gold_raw.is_null());
  }
  EXPECT_EQ(MustRead(DataFile("minif2f_metamath_test.jsonl")).problems[0].id, "aime-1983-p1");
}

TEST(DatasetTest, MissingFileIsAnError) {
  auto ds = ReadDataset("/nonexistent/canopy/none.jsonl");
  ASSERT_FALSE(ds.ok());
  EXPECT_EQ(ds.status().code(), StatusCode::kNotFound);
}

TEST(DatasetTest, MalformedLinesAreReportedAndSkipped) {
  TempFile f("bad.jsonl",
             "{\"question\": \"What is 1+1?\", \"answer\": \"#### 2\"}\n"  // 1 good
             "\n"                                                          // 2 blank
             "{\"question\": \"oops\", \n"                                 // 3 bad JSON
             "[1, 2, 3]\n"                                                 // 4 array
             "{\"prompt\": \"no question here\", \"answer\": \"1\"}\n"     // 5 no question
             "   \r\n"                                                     // 6 blank
             "{\"question\": \"\", \"answer\": \"1\"}\n"                   // 7 empty question
             "{\"question\": 17, \"answer\": \"1\"}\n"                     // 8 not a string
             "{\"question\": \"What is 2+2?\", \"answer\": {\"x\": 1}}\n"  // 9 object gold
             "{\"question\": \"What is 3+3?\", \"answer\": \"6\"}\r\n"     // 10 good, CRLF
             "\"just a string\"\n"                                         // 11 not an object
             "{\"question\": \"What is 4+4?\", \"target\": 8}");           // 12 good, no \n
  Dataset ds = MustRead(f.path());
  ASSERT_EQ(ds.problems.size(), 3u);
  EXPECT_EQ(ds.problems[0].line_number, 1);
  EXPECT_EQ(ds.problems[0].id, "1");
  EXPECT_EQ(ds.problems[0].gold, "2");
  EXPECT_EQ(ds.problems[1].line_number, 10);
  EXPECT_EQ(ds.problems[1].id, "10");
  EXPECT_EQ(ds.problems[1].gold, "6");
  EXPECT_EQ(ds.problems[2].line_number, 12);
  EXPECT_EQ(ds.problems[2].gold, "8");

  ASSERT_EQ(ds.errors.size(), 7u);
  const int64_t lines[] = {3, 4, 5, 7, 8, 9, 11};
  const char* what[] = {"not valid JSON", "not a JSON object", "no question field", "is empty",
                        "not a string",   "is an object",      "not a JSON object"};
  for (size_t i = 0; i < ds.errors.size(); ++i) {
    EXPECT_EQ(ds.errors[i].line_number, lines[i]);
    EXPECT_TRUE(ds.errors[i].message.starts_with("line " + std::to_string(lines[i]) + ": "))
        << ds.errors[i].message;
    EXPECT_NE(ds.errors[i].message.find(what[i]), std::string::npos) << ds.errors[i].message;
  }
}

TEST(DatasetTest, DuplicateIdsKeepTheFirst) {
  TempFile f("dup.jsonl",
             "{\"id\": 7, \"question\": \"a\", \"answer\": \"1\"}\n"
             "{\"id\": \"8\", \"question\": \"b\", \"answer\": \"2\"}\n"
             "{\"id\": 7, \"question\": \"c\", \"answer\": \"3\"}\n");
  Dataset ds = MustRead(f.path());
  ASSERT_EQ(ds.problems.size(), 2u);
  EXPECT_EQ(ds.problems[0].id, "7");
  EXPECT_EQ(ds.problems[0].question, "a");
  EXPECT_EQ(ds.problems[1].id, "8");
  ASSERT_EQ(ds.errors.size(), 1u);
  EXPECT_EQ(ds.errors[0].line_number, 3);
  EXPECT_NE(ds.errors[0].message.find("duplicate id '7' (first on line 1)"), std::string::npos)
      << ds.errors[0].message;
}

TEST(DatasetTest, FieldOverrides) {
  TempFile f("custom.jsonl",
             "{\"key\": \"p-1\", \"prompt\": \"Q one\", \"question\": \"ignored\", "
             "\"ans\": \"\\\\boxed{\\\\frac{1}{2}} done\", \"answer\": \"9\"}\n"
             "{\"key\": \"p-2\", \"prompt\": \"Q two\", \"ans\": \"no box\"}\n"
             "{\"prompt\": \"Q three\", \"ans\": \"\\\\boxed{3}\"}\n");
  DatasetOptions opts;
  opts.question_field = "prompt";
  opts.answer_field = "ans";
  opts.id_field = "key";
  opts.gold_format = GoldFormat::kBoxed;
  opts.task_family = TaskFamily::kProof;
  Dataset ds = MustRead(f.path(), opts);
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.family, TaskFamily::kProof);
  EXPECT_EQ(ds.question_field, "prompt");
  EXPECT_EQ(ds.answer_field, "ans");
  EXPECT_EQ(ds.id_field, "key");
  EXPECT_EQ(ds.problems[0].id, "p-1");
  EXPECT_EQ(ds.problems[0].question, "Q one");
  EXPECT_EQ(ds.problems[0].gold, "\\frac{1}{2}");
  ASSERT_EQ(ds.errors.size(), 2u);
  EXPECT_EQ(ds.errors[0].line_number, 2);  // boxed format, no box: no gold answer
  EXPECT_NE(ds.errors[0].message.find("gold field 'ans' holds no answer"), std::string::npos)
      << ds.errors[0].message;
  EXPECT_EQ(ds.errors[1].line_number, 3);  // lacks the named id field
  EXPECT_NE(ds.errors[1].message.find("no id field 'key'"), std::string::npos);

  opts = {};
  opts.question_field = "nope";
  ds = MustRead(f.path(), opts);
  EXPECT_TRUE(ds.problems.empty());
  ASSERT_EQ(ds.errors.size(), 3u);
  EXPECT_NE(ds.errors[0].message.find("'nope'"), std::string::npos) << ds.errors[0].message;
}

TEST(DatasetTest, LimitAndOffset) {
  DatasetOptions opts;
  opts.offset = 2;
  opts.limit = 3;
  Dataset ds = MustRead(DataFile("gsm8k.jsonl"), opts);
  ASSERT_EQ(ds.problems.size(), 3u);
  EXPECT_EQ(ds.problems[0].id, "2");
  EXPECT_EQ(ds.problems[0].gold, "70000");
  EXPECT_EQ(ds.problems[2].id, "4");

  opts = {};
  opts.limit = 0;
  EXPECT_TRUE(MustRead(DataFile("gsm8k.jsonl"), opts).problems.empty());
  opts = {};
  opts.offset = 1318;
  ds = MustRead(DataFile("gsm8k.jsonl"), opts);
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.problems[0].id, "1318");
  opts.offset = 5000;
  EXPECT_TRUE(MustRead(DataFile("gsm8k.jsonl"), opts).problems.empty());
  opts.offset = -1;
  EXPECT_FALSE(ReadDataset(DataFile("gsm8k.jsonl"), opts).ok());

  // The offset counts good problems, not lines.
  TempFile f("offset.jsonl", "garbage\n{\"question\": \"a\"}\n\n{\"question\": \"b\"}\n");
  opts = {};
  opts.offset = 1;
  ds = MustRead(f.path(), opts);
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.problems[0].question, "b");
  EXPECT_EQ(ds.problems[0].id, "4");
}

TEST(DatasetTest, GoldFromJsonLists) {
  using nlohmann::json;
  // OlympiadBench multi-answer problems: all answers, joined.
  EXPECT_EQ(*GoldFromJson(json::array({"$3$", "$5$"}), "final_answer", std::nullopt), "$3$, $5$");
  EXPECT_EQ(*GoldFromJson(json::array({"7"}), "final_answer", std::nullopt), "7");
  EXPECT_EQ(*GoldFromJson(json::array({1, 2.5}), "final_answer", std::nullopt), "1, 2.5");
  // Several worked solutions: the first one with a boxed answer.
  EXPECT_EQ(*GoldFromJson(json::array({"no box", "so \\boxed{12}.", "\\boxed{13}"}), "solution",
                          std::nullopt),
            "12");
  EXPECT_EQ(*GoldFromJson(json(39), "target", std::nullopt), "39");
  EXPECT_EQ(*GoldFromJson(json(43.0), "target", std::nullopt), "43.0");
  EXPECT_EQ(*GoldFromJson(json(nullptr), "answer", std::nullopt), "");
  EXPECT_EQ(*GoldFromJson(json("  12 "), "answer", std::nullopt), "12");
  EXPECT_EQ(*GoldFromJson(json("so #### 1,234"), "answer", std::nullopt), "1,234");
  EXPECT_FALSE(GoldFromJson(json::object({{"a", 1}}), "answer", std::nullopt).ok());
  EXPECT_FALSE(GoldFromJson(json::array({json::array({1})}), "answer", std::nullopt).ok());
}

TEST(DatasetTest, ContextIsKept) {
  TempFile f(
      "ctx.jsonl",
      "{\"id\": 1, \"context\": \"Let f(x) = x^2.\", \"question\": \"Find f(3).\", "
      "\"final_answer\": [\"9\"]}\n"
      "{\"id\": 2, \"context\": null, \"question\": \"Find 2.\", \"final_answer\": [\"2\"]}\n");
  Dataset ds = MustRead(f.path());
  ASSERT_EQ(ds.problems.size(), 2u);
  EXPECT_EQ(ds.problems[0].context, "Let f(x) = x^2.");
  EXPECT_EQ(ds.problems[0].gold, "9");
  EXPECT_EQ(ds.problems[1].context, "");
}

TEST(DatasetTest, TaskFamilies) {
  EXPECT_EQ(TaskFamilyFromFileName("/x/gsm8k.jsonl"), TaskFamily::kArithmetic);
  EXPECT_EQ(TaskFamilyFromFileName("mawps_multiarith.jsonl"), TaskFamily::kArithmetic);
  EXPECT_EQ(TaskFamilyFromFileName("/d/minerva_math.jsonl"), TaskFamily::kCompetitionMath);
  EXPECT_EQ(TaskFamilyFromFileName("OlympiadBench.jsonl"), TaskFamily::kCompetitionMath);
  EXPECT_EQ(TaskFamilyFromFileName("aime24.jsonl"), TaskFamily::kCompetitionMath);
  EXPECT_EQ(TaskFamilyFromFileName("minif2f_metamath_test.jsonl"), TaskFamily::kProof);
  EXPECT_EQ(TaskFamilyFromFileName("/math/problems.jsonl"), std::nullopt);  // dir ignored
  EXPECT_EQ(*ParseTaskFamily("competition-math"), TaskFamily::kCompetitionMath);
  EXPECT_EQ(*ParseTaskFamily("Proof"), TaskFamily::kProof);
  EXPECT_FALSE(ParseTaskFamily("poetry").ok());
  for (auto f : {TaskFamily::kArithmetic, TaskFamily::kCompetitionMath, TaskFamily::kProof}) {
    EXPECT_EQ(*ParseTaskFamily(TaskFamilyName(f)), f);
  }

  // Unknown file names fall back to the fields.
  TempFile numeric("unknown1.jsonl", "{\"input\": \"q\", \"target\": 4}\n");
  EXPECT_EQ(MustRead(numeric.path()).family, TaskFamily::kArithmetic);
  TempFile latex("unknown2.jsonl", "{\"problem\": \"q\", \"answer\": \"\\\\frac{1}{2}\"}\n");
  EXPECT_EQ(MustRead(latex.path()).family, TaskFamily::kCompetitionMath);
  TempFile proof("unknown3.jsonl", "{\"name\": \"t\", \"statement_mm\": \"|- x\"}\n");
  EXPECT_EQ(MustRead(proof.path()).family, TaskFamily::kProof);
}

TEST(DatasetTest, DeeplyNestedGoldIsAnErrorNotACrash) {
  // 100,000 levels crashed the reader (a recursive copy of the parsed value).
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  TempFile f("deep.jsonl", "{\"input\": \"x\", \"target\": " + deep +
                               "}\n{\"input\": \"y\", \"target\": 3}\n");
  Dataset ds = MustRead(f.path());
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.problems[0].gold, "3");
  ASSERT_EQ(ds.errors.size(), 1u);
  EXPECT_EQ(ds.errors[0].line_number, 1);
  EXPECT_NE(ds.errors[0].message.find("nested 100001 levels deep, more than the limit of 64"),
            std::string::npos)
      << ds.errors[0].message;
}

TEST(DatasetTest, NumberOverflowIsALineErrorNotAnAbort) {
  // Found by tests/fuzz/dataset_fuzzer: nlohmann throws out_of_range, not parse_error.
  TempFile f("overflow.jsonl", "1e" + std::string(90, '7') + "\n{\"input\": \"x\", \"target\": 1e999}\n"
                               "{\"input\": \"y\", \"target\": 2}\n");
  Dataset ds = MustRead(f.path());
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.problems[0].gold, "2");
  ASSERT_EQ(ds.errors.size(), 2u);
  EXPECT_NE(ds.errors[0].message.find("not valid JSON"), std::string::npos) << ds.errors[0].message;
  EXPECT_EQ(ds.errors[1].line_number, 2);
}

TEST(DatasetTest, DevicesAndDirectoriesAreRefusedByName) {
  auto dev = ReadDataset("/dev/zero");
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.status().message().find("not a regular file"), std::string::npos)
      << dev.status().ToString();
  auto dir = ReadDataset(std::filesystem::temp_directory_path().string());
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.status().message().find("is a directory"), std::string::npos)
      << dir.status().ToString();
}

TEST(DatasetTest, FileLargerThanTheLimitIsRefusedBeforeReading) {
  TempFile f("big.jsonl", std::string(4096, ' '));
  auto read = ReadFileToString(f.path(), 1024);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("is 4096 bytes, more than the limit of 1024"),
            std::string::npos)
      << read.status().ToString();
  EXPECT_TRUE(ReadFileToString(f.path(), 4096).ok());
}

TEST(DatasetTest, MissingGoldInAGradedDatasetIsAnError) {
  TempFile f("gold.jsonl",
             "{\"input\": \"a\", \"target\": 1}\n{\"input\": \"b\"}\n"
             "{\"input\": \"c\", \"target\": 3}\n");
  Dataset ds = MustRead(f.path());
  EXPECT_TRUE(ds.graded);
  ASSERT_EQ(ds.problems.size(), 2u);
  ASSERT_EQ(ds.errors.size(), 1u);
  EXPECT_EQ(ds.errors[0].line_number, 2);
  EXPECT_NE(ds.errors[0].message.find("no gold field"), std::string::npos) << ds.errors[0].message;
}

TEST(DatasetTest, DatasetWithoutGoldIsUngraded) {
  TempFile f("nogold.jsonl", "{\"input\": \"a\"}\n{\"input\": \"b\"}\n");
  Dataset ds = MustRead(f.path());
  EXPECT_FALSE(ds.graded);
  EXPECT_EQ(ds.problems.size(), 2u);
  EXPECT_TRUE(ds.errors.empty());
}

// canopy label: every problem needs a gold answer, even when the first one has none.
TEST(DatasetTest, RequiredGoldMakesEveryLineWithoutOneAnError) {
  TempFile f("required.jsonl", "{\"input\": \"a\"}\n{\"input\": \"b\", \"target\": 3}\n{\"input\": \"c\"}\n");
  DatasetOptions opts;
  opts.require_gold = true;
  Dataset ds = MustRead(f.path(), opts);
  EXPECT_TRUE(ds.graded);
  ASSERT_EQ(ds.problems.size(), 1u);
  EXPECT_EQ(ds.problems[0].gold, "3");
  ASSERT_EQ(ds.errors.size(), 2u);
  EXPECT_EQ(ds.errors[0].line_number, 1);
  EXPECT_EQ(ds.errors[1].line_number, 3);
  EXPECT_NE(ds.errors[0].message.find("labelling needs a gold answer"), std::string::npos) << ds.errors[0].message;
}

}  // namespace
}  // namespace canopy
