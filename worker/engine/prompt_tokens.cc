#include "worker/engine/prompt_tokens.h"

#include "worker/model/chat_template.h"

namespace canopy {

std::vector<int32_t> RenderPromptTokens(const Engine& engine, const std::string& system_prompt,
                                        const std::string& user_message) {
  std::vector<ChatMessage> messages;
  if (!system_prompt.empty()) messages.push_back({"system", system_prompt});
  messages.push_back({"user", user_message});
  const ChatTemplateKind kind = engine.chat_template();
  const std::string text = RenderChat(kind, messages, /*add_generation_prompt=*/true,
                                      system_prompt.empty() ? engine.default_system_prompt() : "");
  return engine.tokenizer().Encode(text, kind != ChatTemplateKind::kRaw);
}

}  // namespace canopy
