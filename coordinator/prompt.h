// The prompts canopy sends: a system prompt per task family (overridable) and the user
// message built from a problem. The step format matters to the search: the engine stops a
// step at a blank line ("\n\n"), and answers are read from the last \boxed{}.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "coordinator/dataset.h"

namespace canopy {

// The default system prompt for `family`: reason step by step, one step per paragraph
// (steps separated by a blank line), final answer in \boxed{}.
std::string DefaultSystemPrompt(TaskFamily family);

// The system prompt a user asked for: "" -> DefaultSystemPrompt(family); "@path" -> the
// contents of that file (NotFound when it cannot be read; trailing newlines dropped);
// anything else is the prompt itself. A literal that starts with '@' is written "@@...".
StatusOr<std::string> ResolveSystemPrompt(std::string_view spec, TaskFamily family);

// The user message for one problem: the context first (OlympiadBench's shared `context`,
// when there is one), then the question. Proof statements are introduced as such.
std::string BuildUserMessage(std::string_view question, std::string_view context,
                             TaskFamily family);
inline std::string BuildUserMessage(const Problem& problem, TaskFamily family) {
  return BuildUserMessage(problem.question, problem.context, family);
}

}  // namespace canopy
