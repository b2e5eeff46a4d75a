// ctest-labels: unit
#include "coordinator/prompt.h"

#include <gtest/gtest.h>

#include "tests/testing/temp_dir.h"

namespace canopy {
namespace {

TEST(PromptTest, DefaultsAskForStepsAndABoxedAnswer) {
  for (auto f : {TaskFamily::kArithmetic, TaskFamily::kCompetitionMath, TaskFamily::kProof}) {
    const std::string p = DefaultSystemPrompt(f);
    EXPECT_NE(p.find("step by step"), std::string::npos) << TaskFamilyName(f);
    EXPECT_NE(p.find("blank line"), std::string::npos) << TaskFamilyName(f);
    EXPECT_NE(p.find("\\boxed{}"), std::string::npos) << TaskFamilyName(f);
  }
  EXPECT_NE(DefaultSystemPrompt(TaskFamily::kProof).find("Metamath"), std::string::npos);
  EXPECT_NE(DefaultSystemPrompt(TaskFamily::kArithmetic),
            DefaultSystemPrompt(TaskFamily::kCompetitionMath));
}

TEST(PromptTest, Resolve) {
  EXPECT_EQ(*ResolveSystemPrompt("", TaskFamily::kArithmetic),
            DefaultSystemPrompt(TaskFamily::kArithmetic));
  EXPECT_EQ(*ResolveSystemPrompt("Be brief.", TaskFamily::kArithmetic), "Be brief.");
  EXPECT_EQ(*ResolveSystemPrompt("@@handle", TaskFamily::kArithmetic), "@handle");

  const testing::ScopedTempDir dir("prompt_test");
  const std::string path = dir.Path("prompt.txt");
  testing::WriteStringToFile(path, "Think hard.\nThen answer.\n\n");
  EXPECT_EQ(*ResolveSystemPrompt("@" + path, TaskFamily::kProof), "Think hard.\nThen answer.");
  testing::WriteStringToFile(path, "  \n");
  EXPECT_FALSE(ResolveSystemPrompt("@" + path, TaskFamily::kProof).ok());

  auto missing = ResolveSystemPrompt("@/nonexistent/prompt.txt", TaskFamily::kArithmetic);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(ResolveSystemPrompt("@", TaskFamily::kArithmetic).ok());
}

TEST(PromptTest, UserMessage) {
  EXPECT_EQ(BuildUserMessage("  What is 2+2?\n", "", TaskFamily::kArithmetic), "What is 2+2?");
  EXPECT_EQ(BuildUserMessage("Find f(3).", "Let f(x) = x^2.", TaskFamily::kCompetitionMath),
            "Let f(x) = x^2.\n\nFind f(3).");
  Problem p;
  p.question = "|- ( 1 + 1 ) = 2";
  EXPECT_EQ(BuildUserMessage(p, TaskFamily::kProof),
            "Prove the following theorem.\n\n|- ( 1 + 1 ) = 2");
}

}  // namespace
}  // namespace canopy
