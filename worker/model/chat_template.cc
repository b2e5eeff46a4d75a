#include "worker/model/chat_template.h"

namespace canopy {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kStartHeader = "<|start_header_id|>";

std::string_view Trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\f\v";
  const size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

void AppendChatMl(std::string_view role, std::string_view content, std::string* out) {
  out->append(kImStart).append(role).append("\n").append(content).append(kImEnd).append("\n");
}

void AppendLlama3(std::string_view role, std::string_view content, std::string* out) {
  out->append(kStartHeader).append(role).append("<|end_header_id|>\n\n");
  out->append(Trim(content)).append("<|eot_id|>");
}

}  // namespace

StatusOr<ChatTemplateKind> DetectChatTemplate(std::string_view jinja_or_name) {
  if (jinja_or_name == "chatml") return ChatTemplateKind::kChatMl;
  if (jinja_or_name == "llama3") return ChatTemplateKind::kLlama3;
  if (jinja_or_name == "raw") return ChatTemplateKind::kRaw;
  if (jinja_or_name.find(kImStart) != std::string_view::npos) return ChatTemplateKind::kChatMl;
  if (jinja_or_name.find(kStartHeader) != std::string_view::npos) {
    return ChatTemplateKind::kLlama3;
  }
  std::string shown(jinja_or_name.substr(0, 80));
  if (jinja_or_name.size() > 80) shown += "...";
  return InvalidArgumentError(
      "unknown chat template '" + shown +
      "' (known: chatml, llama3, raw); pass --chat-template raw to send prompts unformatted, "
      "or --chat-template chatml|llama3 to pick one");
}

const char* ChatTemplateName(ChatTemplateKind kind) {
  switch (kind) {
    case ChatTemplateKind::kChatMl:
      return "chatml";
    case ChatTemplateKind::kLlama3:
      return "llama3";
    case ChatTemplateKind::kRaw:
      return "raw";
  }
  return "?";
}

std::string DefaultSystemPrompt(std::string_view jinja) {
  // The newline is a real one, or the two characters `\n` inside a Jinja string literal.
  std::string marker = std::string(kImStart) + "system\n";
  size_t start = jinja.find(marker);
  if (start == std::string_view::npos) {
    marker = std::string(kImStart) + "system\\n";
    start = jinja.find(marker);
  }
  if (start == std::string_view::npos) return "";
  const size_t content = start + marker.size();
  const size_t end = jinja.find(kImEnd, content);
  if (end == std::string_view::npos) return "";
  return std::string(jinja.substr(content, end - content));
}

std::string RenderChat(ChatTemplateKind kind, std::span<const ChatMessage> messages,
                       bool add_generation_prompt, std::string_view default_system_prompt) {
  std::string out;
  if (kind == ChatTemplateKind::kRaw) {
    for (const ChatMessage& m : messages) out += m.content;
    return out;
  }
  const bool add_system =
      !messages.empty() && messages.front().role != "system" && !default_system_prompt.empty();
  auto append = kind == ChatTemplateKind::kChatMl ? AppendChatMl : AppendLlama3;
  if (kind == ChatTemplateKind::kLlama3) out += "<|begin_of_text|>";
  if (add_system) append("system", default_system_prompt, &out);
  for (const ChatMessage& m : messages) append(m.role, m.content, &out);
  if (add_generation_prompt) {
    out += kind == ChatTemplateKind::kChatMl ? "<|im_start|>assistant\n"
                                             : "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

}  // namespace canopy
