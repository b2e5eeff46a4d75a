// Chat templates: a conversation rendered as the prompt text a model was trained on.
//
// Only the templates canopy's models use are built in; a Jinja template from GGUF
// metadata (tokenizer.chat_template) is recognised by its markers, never interpreted.
// The rendered text contains special tokens ("<|im_start|>"), so encode it with
// Tokenizer::Encode(text, /*parse_special=*/true). The Llama 3 rendering starts with
// <|begin_of_text|>, so no BOS is to be added on top.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "common/status.h"

namespace canopy {

enum class ChatTemplateKind { kChatMl, kLlama3, kRaw };

// SmolLM2's template inserts this system message when the first message is not one.
inline constexpr std::string_view kSmolLmDefaultSystemPrompt =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Accepts a name ("chatml", "llama3", "raw") or a Jinja template: `<|im_start|>` means
// ChatML, `<|start_header_id|>` Llama 3. Anything else is InvalidArgument, pointing at
// `--chat-template raw`.
StatusOr<ChatTemplateKind> DetectChatTemplate(std::string_view jinja_or_name);

const char* ChatTemplateName(ChatTemplateKind kind);

// The system prompt a ChatML Jinja template inserts when the conversation has none (as
// SmolLM2's does), or "" when it inserts none.
std::string DefaultSystemPrompt(std::string_view jinja);

// ChatML:  <|im_start|>{role}\n{content}<|im_end|>\n ... then <|im_start|>assistant\n
//          when add_generation_prompt. A non-empty `default_system_prompt` is inserted
//          as a system message when the first message is not "system".
// Llama 3: <|begin_of_text|> then <|start_header_id|>{role}<|end_header_id|>\n\n
//          {content, trimmed as the official template does}<|eot_id|> per message, then
//          <|start_header_id|>assistant<|end_header_id|>\n\n when add_generation_prompt;
//          the default system prompt applies as for ChatML.
// Raw:     the contents concatenated; no generation prompt, no system prompt.
std::string RenderChat(ChatTemplateKind kind, std::span<const ChatMessage> messages,
                       bool add_generation_prompt, std::string_view default_system_prompt = {});

}  // namespace canopy
