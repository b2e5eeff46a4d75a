// Byte-level BPE tokenizer (GPT-2 family: SmolLM, Llama 3, Qwen 2).
//
// NOTE: how Encode turns bytes into ids
//
//   text ─► special tokens ─► UTF-8 check ──► regex pre-tokenizer ─► BPE per piece
//           "<|im_start|>"     invalid bytes   PCRE2, one or more     merges by rank,
//           = 1 id (leftmost-  form pieces     stages (per `pre`)     cached per word
//           longest match)     of their own
//
// The pre-tokenizer stages mirror Hugging Face `tokenizers` for each flavour: every stage
// splits each piece into regex matches AND the gaps between them ("isolated"), and each
// piece is matched on its own (look-aheads do not see past it). BPE follows HF's
// `Word::merge_all`: the lowest-rank pair merges first, ties go to the leftmost pair.
// Invalid UTF-8 never reaches PCRE2; it becomes pieces of raw bytes, which byte-level BPE
// expresses, so Decode(Encode(x)) == x for every byte string x -- provided the vocabulary
// has all 256 single-byte tokens (covers_all_bytes()). SmolLM2's lacks 21 (some control
// bytes, bytes that never occur in UTF-8, and the lead bytes 0xF1/0xF2); like HF tokenizers
// (BPE without unk token) and llama.cpp, Encode drops such bytes.
//
// Thread-safety: a Tokenizer is immutable after construction apart from an internal,
// mutex-guarded BPE cache, so all const methods may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/status.h"

namespace canopy {

class GgufFile;

// GGUF token types (llama.cpp's llama_token_type).
enum TokenType : int32_t {
  kTokenTypeNormal = 1,
  kTokenTypeUnknown = 2,
  kTokenTypeControl = 3,
  kTokenTypeUserDefined = 4,
  kTokenTypeUnused = 5,
  kTokenTypeByte = 6,
};

// Everything a Tokenizer is built from, as stored in GGUF metadata.
struct TokenizerSpec {
  // Vocabulary in the byte-level alphabet ("Ġthe"); control and user-defined tokens are
  // raw text ("<|im_start|>"). Single-byte tokens should cover all 256 bytes; see
  // Tokenizer::covers_all_bytes().
  std::vector<std::string> tokens;
  std::vector<int32_t> token_types;  // one per token (TokenType); empty = all normal
  std::vector<std::pair<std::string, std::string>> merges;  // by rank, best first
  // Pre-tokenizer flavour: "smollm", "gpt2", "llama-bpe", "qwen2" (llama.cpp's names;
  // the aliases "gpt-2", "llama3", "llama-v3", "deepseek-r1-qwen" are accepted too).
  std::string pre;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
};

namespace tokenizer_internal {
class PreTokenizer;
struct BpeCache;
}  // namespace tokenizer_internal

class Tokenizer {
 public:
  // Validates the spec: unknown `pre` is Unimplemented; sizes that disagree or a bos/eos
  // id out of range are InvalidArgument. Merges naming a
  // piece that is not in the vocabulary are ignored (they can never apply).
  static StatusOr<Tokenizer> FromSpec(TokenizerSpec spec);

  // Reads tokenizer.ggml.{model,tokens,token_type,merges,pre,bos_token_id,eos_token_id}.
  // A model other than "gpt2" is Unimplemented. A missing `pre` means "gpt2".
  static StatusOr<TokenizerSpec> SpecFromGguf(const GgufFile& gguf);
  static StatusOr<Tokenizer> FromGguf(const GgufFile& gguf);

  // Reads a Hugging Face tokenizer.json (model.type "BPE"; merges as "a b" or ["a", "b"];
  // added_tokens with `special`: special → control, otherwise user-defined). The flavour
  // comes from the pre_tokenizer section. bos/eos come from a tokenizer_config.json beside
  // the file when there is one, else stay -1.
  // Token ids must lie in [0, 2 x entries) (holes stay unused): DataLoss naming the token
  // and its id otherwise, so no file sizes the table far beyond what it lists.
  static StatusOr<TokenizerSpec> SpecFromHfJson(const std::string& path);
  // The same from the text of a tokenizer.json (no tokenizer_config.json is read; bos/eos
  // stay -1); `source_name` names it in errors.
  static StatusOr<TokenizerSpec> SpecFromHfJsonText(const std::string& json_text,
                                                    const std::string& source_name);
  static StatusOr<Tokenizer> FromHfJson(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Text to ids. With `parse_special`, control tokens written in the text
  // ("<|im_start|>") become their single ids; without it they are ordinary text.
  // User-defined tokens (HF added tokens with special=false) always match, as in HF
  // tokenizers and llama.cpp. No BOS is added.
  std::vector<int32_t> Encode(std::string_view text, bool parse_special) const;

  // Ids to raw bytes (possibly not valid UTF-8 when a character spans tokens). Control
  // and user-defined tokens render as their text. Ids outside the vocabulary render as
  // nothing.
  std::string Decode(std::span<const int32_t> ids) const;

  // The raw bytes of one token, for streaming; empty for an id outside the vocabulary.
  const std::string& TokenBytes(int32_t id) const;

  // Lookup by vocabulary string (byte-level alphabet: "Ġthe", or "<|im_end|>").
  std::optional<int32_t> TokenId(std::string_view piece) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  // eos plus <|im_end|>, <|eot_id|> and <|endoftext|> where present, without repeats.
  std::vector<int32_t> EndOfTurnIds() const;
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  const std::string& pre() const { return pre_; }
  int32_t token_type(int32_t id) const;
  // Whether every byte has a single-byte token, i.e. Encode loses nothing.
  bool covers_all_bytes() const { return covers_all_bytes_; }

 private:
  Tokenizer();
  // Appends the BPE ids of one pre-tokenized piece.
  void EncodePiece(std::string_view piece, std::vector<int32_t>* out) const;
  void EncodeText(std::string_view text, std::vector<int32_t>* out) const;
  void Bpe(std::string_view piece, std::vector<int32_t>* out) const;

  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  std::vector<std::string> tokens_;  // vocabulary strings
  std::vector<int32_t> token_types_;
  std::vector<std::string> token_bytes_;  // decoded raw bytes per token
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::unordered_map<uint64_t, Merge> merges_;  // PairKey(left, right) → merge
  int32_t byte_token_[256] = {};  // id of each single-byte token, -1 where there is none
  bool covers_all_bytes_ = false;
  // Control and user-defined tokens, longest first within each first byte.
  std::vector<std::vector<int32_t>> specials_by_first_byte_;
  std::string pre_;
  bool ignore_merges_ = false;  // llama-bpe: a piece that is itself a token is not merged
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  std::unique_ptr<tokenizer_internal::PreTokenizer> pre_tokenizer_;
  std::unique_ptr<tokenizer_internal::BpeCache> cache_;
};

}  // namespace canopy
