// ctest-labels: unit
#include "search/answer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace canopy {
namespace {

TEST(ExtractBoxedTest, FindsLastBoxedWithNestedBraces) {
  EXPECT_EQ(ExtractBoxed("so \\boxed{1} then \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
  EXPECT_EQ(ExtractBoxed("\\boxed{\\{1, 2\\}}"), "\\{1, 2\\}");
  EXPECT_EQ(ExtractBoxed("$\\boxed{a^{b^{c}}}$"), "a^{b^{c}}");
  EXPECT_EQ(ExtractBoxed("\\fbox{7}"), "7");
  EXPECT_EQ(ExtractBoxed("The answer is $\\boxed 5$."), "5");
  EXPECT_EQ(ExtractBoxed("\\boxed{ 12 }"), "12");
  EXPECT_EQ(ExtractBoxed("no box here"), std::nullopt);
  EXPECT_EQ(ExtractBoxed("\\boxed{unclosed"), std::nullopt);
  // An unclosed last box falls back to the previous one.
  EXPECT_EQ(ExtractBoxed("\\boxed{3} and \\boxed{4"), "3");
}

TEST(ExtractGsm8kAnswerTest, TakesTextAfterLastMarker) {
  EXPECT_EQ(ExtractGsm8kAnswer("a\n#### 1\nb\n#### 1,200 "), "1,200");
  EXPECT_EQ(ExtractGsm8kAnswer("#### 18"), "18");
  EXPECT_EQ(ExtractGsm8kAnswer("no marker 18"), std::nullopt);
  EXPECT_EQ(ExtractGsm8kAnswer("####   "), std::nullopt);
}

TEST(ExtractLastNumberTest, Numbers) {
  EXPECT_EQ(ExtractLastNumber("It costs $1,250.50."), "1250.50");
  EXPECT_EQ(ExtractLastNumber("from 3 to -7 degrees"), "-7");
  EXPECT_EQ(ExtractLastNumber("about .5 of it"), "0.5");
  EXPECT_EQ(ExtractLastNumber("points 1,2"), "2");
  EXPECT_EQ(ExtractLastNumber("no digits"), std::nullopt);
  EXPECT_EQ(ExtractLastNumber("42"), "42");
}

TEST(ExtractAnswerTest, PrefersBoxedThenPhraseThenLastNumber) {
  EXPECT_EQ(ExtractAnswer("3 + 4 = 7, so \\boxed{7}. Check: 8"), "7");
  EXPECT_EQ(ExtractAnswer("So 5 apples.\nThe answer is 12.\n"), "12");
  EXPECT_EQ(ExtractAnswer("So, the answer is 21 - 8 = 13."), "13");
  // A number that ends a clause is the answer; the prose after it is not.
  EXPECT_EQ(ExtractAnswer("So, the answer is 21, which is the number of extra flowers."), "21");
  EXPECT_EQ(ExtractAnswer("The answer is 7. Explanation: it needs step-by-step reasoning."), "7");
  EXPECT_EQ(ExtractAnswer("The answer is $1,250.50; she saved it."), "$1,250.50");
  EXPECT_EQ(ExtractAnswer("The answer is 5, because 2 + 2 = 4"), "5");
  EXPECT_EQ(ExtractAnswer("The answer is 1,250 dollars"), "1,250 dollars");  // units: NormalizeAnswer's job
  EXPECT_EQ(ExtractAnswer("The answer is 3.5"), "3.5");
  EXPECT_EQ(ExtractAnswer("The answer is 2, 3 and 4"), "2, 3 and 4");  // a list
  EXPECT_EQ(ExtractAnswer("The answer is 3/4, a fraction"), "3/4, a fraction");  // not a lone number
  EXPECT_EQ(ExtractAnswer("Final Answer: $\\frac{3}{4}$"), "$\\frac{3}{4}$");
  EXPECT_EQ(ExtractAnswer("We get 3 then 9 cookies"), "9");
  EXPECT_EQ(ExtractAnswer("nothing"), std::nullopt);
}

TEST(NormalizeAnswerTest, Forms) {
  EXPECT_EQ(NormalizeAnswer("$\\dfrac{1}{2}$"), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeAnswer("\\tfrac12"), "\\frac{1}{2}");
  EXPECT_EQ(NormalizeAnswer("\\frac1{b}"), "\\frac{1}{b}");
  EXPECT_EQ(NormalizeAnswer("3/4"), "\\frac{3}{4}");
  EXPECT_EQ(NormalizeAnswer("\\sqrt2"), "\\sqrt{2}");
  EXPECT_EQ(NormalizeAnswer("\\left( 1, 2 \\right)"), "(1,2)");
  EXPECT_EQ(NormalizeAnswer("5 \\text{ cm}"), "5");
  EXPECT_EQ(NormalizeAnswer("72 \\mathrm{~m}"), "72");
  EXPECT_EQ(NormalizeAnswer("18 dollars"), "18");
  EXPECT_EQ(NormalizeAnswer("90^\\circ"), "90");
  EXPECT_EQ(NormalizeAnswer("90^{\\circ}"), "90");
  EXPECT_EQ(NormalizeAnswer("50\\%"), "50");
  EXPECT_EQ(NormalizeAnswer("1,000,000"), "1000000");
  EXPECT_EQ(NormalizeAnswer("1{,}000"), "1000");
  EXPECT_EQ(NormalizeAnswer("x = 5"), "5");
  EXPECT_EQ(NormalizeAnswer("y_1=\\frac{1}{3}"), "\\frac{1}{3}");
  EXPECT_EQ(NormalizeAnswer("12."), "12");
  EXPECT_EQ(NormalizeAnswer(".5"), "0.5");
  EXPECT_EQ(NormalizeAnswer("\\text{Evelyn}"), "Evelyn");
  EXPECT_EQ(NormalizeAnswer("\\boxed{7}"), "7");
  EXPECT_EQ(NormalizeAnswer("3 n"), "3n");
  EXPECT_EQ(NormalizeAnswer("f(x)=2 x"), "f(x)=2x");
}

TEST(ParseNumericAnswerTest, Forms) {
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("-\\frac{3}{4}"), -0.75);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("1.5\\times10^{-3}"), 1.5e-3);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("2 \\cdot 10^4"), 2e4);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("10^{3}"), 1000);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("4.5e-5"), 4.5e-5);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("$1,234.5$"), 1234.5);
  EXPECT_DOUBLE_EQ(*ParseNumericAnswer("\\frac{\\frac{1}{2}}{2}"), 0.25);
  EXPECT_EQ(ParseNumericAnswer("inf"), std::nullopt);
  EXPECT_EQ(ParseNumericAnswer("nan"), std::nullopt);
  EXPECT_EQ(ParseNumericAnswer("0x10"), std::nullopt);
  EXPECT_EQ(ParseNumericAnswer("\\sqrt{2}"), std::nullopt);
  EXPECT_EQ(ParseNumericAnswer("1/0"), std::nullopt);
  EXPECT_EQ(ParseNumericAnswer("--3"), std::nullopt);
}

struct Pair {
  const char* prediction;
  const char* gold;
};

TEST(AnswersEquivalentTest, EquivalentPairs) {
  const std::vector<Pair> pairs = {
      {"0.5", "\\frac{1}{2}"},
      {"1,000", "1000"},
      {"50\\%", "50"},
      {"50%", "0.5"},
      {"(1,2)", "(1, 2)"},
      {"5 \\text{ cm}", "5"},
      {"\\dfrac{3}{4}", "0.75"},
      {"\\frac34", "3/4"},
      {"-\\frac{1}{2}", "-0.5"},
      {"$18", "18"},
      {"18.00", "18"},
      {"x = 3", "3"},
      {"1e3", "1000"},
      {"1.6\\times 10^{-5}", "0.000016"},
      {"\\boxed{42}", "42"},
      {"90^\\circ", "90"},
      {"[0, \\frac{1}{2})", "[0,0.5)"},
      {"\\left(2, 3\\right)", "(2,3)"},
      {"0.33333", "\\frac{1}{3}"},
      {"\\sqrt2", "\\sqrt{2}"},
      {"\\text{Evelyn}", "Evelyn"},
      {"12.", "12"},
      {"69, 84", "$69$,$84$"},
      {"2^{1009}", "$2^{1009}$"},
      {"1,234,567", "1234567"},
      {"3 \\mathrm{~m}", "3"},
  };
  for (const Pair& p : pairs) {
    EXPECT_TRUE(AnswersEquivalent(p.prediction, p.gold)) << p.prediction << " vs " << p.gold;
    EXPECT_TRUE(AnswersEquivalent(p.gold, p.prediction)) << p.gold << " vs " << p.prediction;
  }
}

TEST(AnswersEquivalentTest, NotEquivalentPairs) {
  const std::vector<Pair> pairs = {
      {"3", "4"},
      {"\\frac{1}{3}", "0.33"},
      {"(1,2)", "(2,1)"},
      {"(1,2)", "[1,2]"},
      {"(1,2]", "(1,2)"},
      {"(1,2)", "(1,2,3)"},
      {"1,2", "12"},
      {"3n", "3"},
      {"3 n", "3"},
      {"\\sqrt{2}", "\\sqrt{3}"},
      {"-1", "1"},
      {"1000", "1001"},
      {"", "0"},
      {"0", ""},
      {"\\frac{1}{2}", "\\frac{1}{3}"},
      {"2x", "2y"},
      {"1e-3", "1e-4"},
      {"50", "0.5"},
  };
  for (const Pair& p : pairs) {
    EXPECT_FALSE(AnswersEquivalent(p.prediction, p.gold)) << p.prediction << " vs " << p.gold;
    EXPECT_FALSE(AnswersEquivalent(p.gold, p.prediction)) << p.gold << " vs " << p.prediction;
  }
}

TEST(GoldAnswerTest, Formats) {
  EXPECT_EQ(GoldAnswer("  7 ", GoldFormat::kPlain), "7");
  EXPECT_EQ(GoldAnswer("x\n#### 1,000", GoldFormat::kGsm8k), "1,000");
  EXPECT_EQ(GoldAnswer("no marker", GoldFormat::kGsm8k), "");
  EXPECT_EQ(GoldAnswer("so $\\boxed{\\frac{1}{2}}$.", GoldFormat::kBoxed), "\\frac{1}{2}");
  EXPECT_EQ(GoldAnswer("none", GoldFormat::kBoxed), "");
}

// ---- Real data from the shared datasets -------------------------------------------------

// Counts over the fixed shared datasets, computed once and pinned.
constexpr int kGsm8kFourDigitGolds = 131;  // golds of 1000 or more (written with commas or not)
constexpr int kMinervaBoxed = 272;        // solutions with a \boxed answer
constexpr int kMinervaNumeric = 190;      // of those, boxed answers that parse as numbers
constexpr size_t kMawpsRows = 600;
constexpr int kOlympiadNumeric = 462;     // final answers that parse as numbers
constexpr int kOlympiadTuples = 33;       // answer_type "Tuple"

std::vector<nlohmann::json> ReadJsonl(const std::string& name) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(std::string(CANOPY_DATA_DIR) + "/" + name);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

bool DatasetPresent(const std::string& name) {
  return std::filesystem::exists(std::string(CANOPY_DATA_DIR) + "/" + name);
}

// "1234567" -> "1,234,567".
std::string WithCommas(const std::string& n) {
  size_t start = (!n.empty() && n[0] == '-') ? 1 : 0;
  std::string out = n.substr(0, start);
  std::string digits = n.substr(start);
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

TEST(DatasetAnswersTest, Gsm8kGoldsAreNumbers) {
  ASSERT_TRUE(DatasetPresent("gsm8k.jsonl")) << "data/gsm8k.jsonl is missing";
  std::vector<nlohmann::json> rows = ReadJsonl("gsm8k.jsonl");
  ASSERT_EQ(rows.size(), 1319u);
  int with_thousands = 0;
  for (const nlohmann::json& row : rows) {
    const std::string field = row.at("answer").get<std::string>();
    const std::string gold = GoldAnswer(field, GoldFormat::kGsm8k);
    ASSERT_FALSE(gold.empty()) << field;
    std::optional<double> value = ParseNumericAnswer(gold);
    ASSERT_TRUE(value.has_value()) << gold;
    const std::string plain = NormalizeAnswer(gold);
    if (plain.size() >= 4) ++with_thousands;
    EXPECT_TRUE(AnswersEquivalent(gold, gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent(WithCommas(plain), gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent("$" + plain, gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent(plain + ".0", gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent("\\boxed{" + plain + "}", gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent(plain + " dollars", gold)) << gold;
    EXPECT_FALSE(AnswersEquivalent(std::to_string(static_cast<long long>(*value) + 1), gold))
        << gold;
    // The gold is also what a model's "#### N"-style output yields.
    EXPECT_TRUE(AnswersEquivalent(*ExtractAnswer("Reasoning...\nThe answer is " + gold + "."),
                                  gold))
        << gold;
    EXPECT_TRUE(AnswersEquivalent(*ExtractLastNumber(field), gold)) << gold;
  }
  EXPECT_EQ(with_thousands, kGsm8kFourDigitGolds);
}

TEST(DatasetAnswersTest, MinervaSolutionsHaveBoxedAnswers) {
  ASSERT_TRUE(DatasetPresent("minerva_math.jsonl")) << "data/minerva_math.jsonl is missing";
  std::vector<nlohmann::json> rows = ReadJsonl("minerva_math.jsonl");
  ASSERT_EQ(rows.size(), 272u);
  int boxed = 0, numeric = 0;
  for (const nlohmann::json& row : rows) {
    const std::string solution = row.at("solution").get<std::string>();
    std::optional<std::string> answer = ExtractBoxed(solution);
    if (!answer) continue;
    ++boxed;
    EXPECT_EQ(GoldAnswer(solution, GoldFormat::kBoxed), *answer);
    EXPECT_TRUE(AnswersEquivalent(*answer, *answer)) << *answer;
    EXPECT_TRUE(AnswersEquivalent("\\boxed{" + *answer + "}", *answer)) << *answer;
    EXPECT_TRUE(AnswersEquivalent("$" + *answer + "$", *answer)) << *answer;
    EXPECT_EQ(ExtractAnswer(solution), answer);
    if (std::optional<double> v = ParseNumericAnswer(*answer)) {
      ++numeric;
      EXPECT_FALSE(AnswersEquivalent(std::to_string(*v * 1.01 + 1), *answer)) << *answer;
    }
  }
  EXPECT_EQ(boxed, kMinervaBoxed);
  EXPECT_EQ(numeric, kMinervaNumeric);
}

TEST(DatasetAnswersTest, MawpsTargetsMatchTheirForms) {
  ASSERT_TRUE(DatasetPresent("mawps_multiarith.jsonl")) << "data/mawps_multiarith.jsonl is missing";
  std::vector<nlohmann::json> rows = ReadJsonl("mawps_multiarith.jsonl");
  ASSERT_EQ(rows.size(), kMawpsRows);
  for (const nlohmann::json& row : rows) {
    const std::string gold = GoldAnswer(row.at("target").dump(), GoldFormat::kPlain);
    ASSERT_TRUE(ParseNumericAnswer(gold).has_value()) << gold;
    EXPECT_TRUE(AnswersEquivalent(gold + ".00", gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent("x = " + gold, gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent(*ExtractAnswer("So they have " + gold + " left."), gold));
    EXPECT_FALSE(AnswersEquivalent(gold + "1", gold)) << gold;
  }
}

TEST(DatasetAnswersTest, OlympiadBenchFinalAnswers) {
  ASSERT_TRUE(DatasetPresent("olympiadbench.jsonl")) << "data/olympiadbench.jsonl is missing";
  std::vector<nlohmann::json> rows = ReadJsonl("olympiadbench.jsonl");
  ASSERT_EQ(rows.size(), 675u);
  int numeric = 0, tuples = 0;
  for (const nlohmann::json& row : rows) {
    const nlohmann::json& finals = row.at("final_answer");
    ASSERT_TRUE(finals.is_array());
    ASSERT_EQ(finals.size(), 1u);
    const std::string gold = GoldAnswer(finals[0].get<std::string>(), GoldFormat::kPlain);
    EXPECT_TRUE(AnswersEquivalent(gold, gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent("\\boxed{" + gold + "}", gold)) << gold;
    EXPECT_TRUE(AnswersEquivalent(*ExtractAnswer("So $\\boxed{" + gold + "}$."), gold)) << gold;
    if (ParseNumericAnswer(gold)) ++numeric;
    if (row.at("answer_type") == "Tuple") {
      ++tuples;
      // Element-wise: spacing inside a tuple does not matter, order does.
      std::string spaced;
      for (char c : gold) {
        spaced.push_back(c);
        if (c == ',') spaced.push_back(' ');
      }
      EXPECT_TRUE(AnswersEquivalent(spaced, gold)) << gold;
    }
  }
  EXPECT_EQ(numeric, kOlympiadNumeric);
  EXPECT_EQ(tuples, kOlympiadTuples);
}

}  // namespace
}  // namespace canopy
