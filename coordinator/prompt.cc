#include "coordinator/prompt.h"

#include "common/mapped_file.h"

namespace canopy {
namespace {

std::string TrimCopy(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::string DefaultSystemPrompt(TaskFamily family) {
  switch (family) {
    case TaskFamily::kArithmetic:
      return "Solve the math word problem. Reason step by step. Write each step as one short "
             "paragraph and separate consecutive steps with a blank line. At the end, write "
             "the final answer as a number alone inside \\boxed{}, for example \\boxed{42}.";
    case TaskFamily::kCompetitionMath:
      return "Solve the math problem. Reason step by step. Write each step as one short "
             "paragraph and separate consecutive steps with a blank line. At the end, write "
             "the final answer in simplest form inside \\boxed{}, for example "
             "\\boxed{\\frac{3}{4}}.";
    case TaskFamily::kProof:
      return "You are proving a theorem stated in Metamath (set.mm). Reason step by step "
             "about how to prove it. Write each step as one short paragraph and separate "
             "consecutive steps with a blank line. At the end, write the complete proof, "
             "the sequence of labels that replaces the '?', inside \\boxed{}.";
  }
  return "";
}

StatusOr<std::string> ResolveSystemPrompt(std::string_view spec, TaskFamily family) {
  if (spec.empty()) return DefaultSystemPrompt(family);
  if (spec.substr(0, 2) == "@@") return std::string(spec.substr(1));
  if (spec.front() == '@') {
    const std::string path(spec.substr(1));
    if (path.empty()) return InvalidArgumentError("system prompt '@' names no file");
    auto contents = ReadFileToString(path);
    if (!contents.ok()) return contents.status().WithContext("system prompt file");
    std::string prompt = std::move(contents).value();
    while (!prompt.empty() && (prompt.back() == '\n' || prompt.back() == '\r')) prompt.pop_back();
    if (TrimCopy(prompt).empty()) {
      return InvalidArgumentError("system prompt file " + path + " is empty");
    }
    return prompt;
  }
  return std::string(spec);
}

std::string BuildUserMessage(std::string_view question, std::string_view context,
                             TaskFamily family) {
  std::string msg;
  const std::string ctx = TrimCopy(context);
  if (!ctx.empty()) msg += ctx + "\n\n";
  if (family == TaskFamily::kProof) msg += "Prove the following theorem.\n\n";
  msg += TrimCopy(question);
  return msg;
}

}  // namespace canopy
