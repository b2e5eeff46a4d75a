// ctest-labels: unit
#include "worker/model/chat_template.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

namespace canopy {
namespace {

using ::testing::HasSubstr;

// SmolLM2-135M-Instruct's tokenizer.chat_template, as stored in its GGUF.
constexpr const char* kSmolLmJinja =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}";

constexpr const char* kLlama3Jinja =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
    "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

TEST(ChatTemplateTest, DetectsNamesAndJinja) {
  EXPECT_EQ(*DetectChatTemplate("chatml"), ChatTemplateKind::kChatMl);
  EXPECT_EQ(*DetectChatTemplate("llama3"), ChatTemplateKind::kLlama3);
  EXPECT_EQ(*DetectChatTemplate("raw"), ChatTemplateKind::kRaw);
  EXPECT_EQ(*DetectChatTemplate(kSmolLmJinja), ChatTemplateKind::kChatMl);
  EXPECT_EQ(*DetectChatTemplate(kLlama3Jinja), ChatTemplateKind::kLlama3);
  EXPECT_STREQ(ChatTemplateName(ChatTemplateKind::kLlama3), "llama3");
}

TEST(ChatTemplateTest, UnknownTemplatePointsAtRawOption) {
  StatusOr<ChatTemplateKind> kind = DetectChatTemplate("{{ '[INST] ' + message }}");
  ASSERT_FALSE(kind.ok());
  EXPECT_EQ(kind.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(kind.status().message(), HasSubstr("--chat-template raw"));
  EXPECT_THAT(kind.status().message(), HasSubstr("[INST]"));
  EXPECT_EQ(DetectChatTemplate("").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(DetectChatTemplate("ChatML").status().code(), StatusCode::kInvalidArgument);
}

TEST(ChatTemplateTest, DefaultSystemPromptFromJinja) {
  EXPECT_EQ(DefaultSystemPrompt(kSmolLmJinja), kSmolLmDefaultSystemPrompt);
  EXPECT_EQ(DefaultSystemPrompt("{{ '<|im_start|>system\\nBe brief.<|im_end|>' }}"), "Be brief.");
  EXPECT_EQ(DefaultSystemPrompt(kLlama3Jinja), "");
  EXPECT_EQ(DefaultSystemPrompt("<|im_start|>system\nunterminated"), "");
}

TEST(ChatTemplateTest, ChatMl) {
  const std::vector<ChatMessage> messages = {
      {"user", "What is 2+2?"}, {"assistant", "4"}, {"user", "And 3+3?"}};
  EXPECT_EQ(RenderChat(ChatTemplateKind::kChatMl, messages, true),
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(RenderChat(ChatTemplateKind::kChatMl, messages, false),
            "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n");
}

TEST(ChatTemplateTest, ChatMlDefaultSystemPrompt) {
  const std::vector<ChatMessage> user = {{"user", "Hi"}};
  EXPECT_EQ(RenderChat(ChatTemplateKind::kChatMl, user, true, kSmolLmDefaultSystemPrompt),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
            "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  // A conversation that has its own system message keeps it alone.
  const std::vector<ChatMessage> with_system = {{"system", "Be terse."}, {"user", "Hi"}};
  EXPECT_EQ(RenderChat(ChatTemplateKind::kChatMl, with_system, false, kSmolLmDefaultSystemPrompt),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  // No messages, no system prompt (as the Jinja loop).
  EXPECT_EQ(RenderChat(ChatTemplateKind::kChatMl, {}, true, kSmolLmDefaultSystemPrompt),
            "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Llama3) {
  const std::vector<ChatMessage> messages = {{"system", "Be terse."}, {"user", "  Hi there \n"}};
  EXPECT_EQ(RenderChat(ChatTemplateKind::kLlama3, messages, true),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(RenderChat(ChatTemplateKind::kLlama3, {messages.begin() + 1, 1}, false, "Sys"),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSys<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>");
}

TEST(ChatTemplateTest, Raw) {
  const std::vector<ChatMessage> messages = {{"system", "A"}, {"user", "B\n"}, {"user", "C"}};
  EXPECT_EQ(RenderChat(ChatTemplateKind::kRaw, messages, true, "ignored"), "AB\nC");
  EXPECT_EQ(RenderChat(ChatTemplateKind::kRaw, {}, true), "");
}

}  // namespace
}  // namespace canopy
