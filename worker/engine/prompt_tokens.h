// A root's prompt as the policy sees it: the chat (system, user) rendered with the engine's
// template and encoded. The worker's CreateRoot, `canopy train-prm` (features at the tokens
// the policy saw) and the value-head scorer on a base model all use this one rendering.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "worker/engine/engine.h"

namespace canopy {

// The model's default system prompt when `system_prompt` is empty.
std::vector<int32_t> RenderPromptTokens(const Engine& engine, const std::string& system_prompt,
                                        const std::string& user_message);

}  // namespace canopy
