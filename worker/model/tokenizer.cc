#include "worker/model/tokenizer.h"

#include <pcre2.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <queue>

#include "worker/model/unicode.h"

namespace canopy {
namespace tokenizer_internal {
namespace {

// The regexes llama.cpp uses per pre-tokenizer type (llama-vocab.cpp), which match what
// HF tokenizers does for these models. The GPT-2 one carries HF ByteLevel's final `|\s+`;
// llama.cpp leaves it out and emits the unmatched whitespace as a gap piece instead,
// which gives the same pieces.
constexpr const char* kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|)"
    R"(\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kDigitRegex = R"(\p{N})";

struct CodeDeleter {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* md) const { pcre2_match_data_free(md); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataDeleter>;

}  // namespace

// Splits valid UTF-8 into pieces: each stage splits every piece from the stage before
// into matches and the gaps between them (HF's SplitDelimiterBehavior::Isolated).
class PreTokenizer {
 public:
  static StatusOr<std::unique_ptr<PreTokenizer>> Create(const std::vector<const char*>& regexes) {
    auto pre = std::unique_ptr<PreTokenizer>(new PreTokenizer());
    for (const char* pattern : regexes) {
      int error = 0;
      PCRE2_SIZE error_offset = 0;
      pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
      if (code == nullptr) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof(message));
        return InternalError("tokenizer: cannot compile pre-tokenizer regex at offset " +
                             std::to_string(error_offset) + ": " +
                             reinterpret_cast<const char*>(message));
      }
      // Without JIT support (or when it fails) pcre2_match falls back to the interpreter.
      (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
      pre->stages_.emplace_back(code);
    }
    return pre;
  }

  // Appends the pieces of `text` (valid UTF-8) to *pieces.
  void Split(std::string_view text, std::vector<std::string_view>* pieces) const {
    MatchData md(pcre2_match_data_create(4, nullptr));
    CANOPY_CHECK(md != nullptr) << "out of memory";
    std::vector<std::string_view> current = {text};
    std::vector<std::string_view> next;
    for (size_t s = 0; s < stages_.size(); ++s) {
      std::vector<std::string_view>* out = s + 1 == stages_.size() ? pieces : &next;
      for (std::string_view piece : current) SplitOne(stages_[s].get(), md.get(), piece, out);
      if (out == &next) {
        current.swap(next);
        next.clear();
      }
    }
  }

 private:
  PreTokenizer() = default;

  static void SplitOne(const pcre2_code* code, pcre2_match_data* md, std::string_view text,
                       std::vector<std::string_view>* out) {
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0;
    while (pos < text.size()) {
      int rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                         nullptr);
      }
      if (rc < 0) break;  // no further match (or a resource limit): the rest is one gap
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t start = ov[0], end = ov[1];
      if (end == start) {  // cannot happen with our regexes; step over one character
        if (start >= text.size()) break;
        end = start + std::max(1, Utf8CharLength(text, start));
        start = end;
      }
      if (start > pos) out->push_back(text.substr(pos, start - pos));
      if (end > start) out->push_back(text.substr(start, end - start));
      pos = end;
    }
    if (pos < text.size()) out->push_back(text.substr(pos));
  }

  std::vector<std::unique_ptr<pcre2_code, CodeDeleter>> stages_;
};

// Word → ids. Bounded: cleared when full, which is cheap next to the BPE it saves.
struct BpeCache {
  static constexpr size_t kMaxEntries = 1 << 16;
  static constexpr size_t kMaxWordBytes = 128;
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> map;  // GUARDED_BY(mu)
};

}  // namespace tokenizer_internal

using tokenizer_internal::BpeCache;
using tokenizer_internal::PreTokenizer;

namespace {

struct PreConfig {
  const char* canonical;
  std::vector<const char*> regexes;
  bool ignore_merges;
};

std::optional<PreConfig> LookUpPre(const std::string& pre) {
  using namespace tokenizer_internal;
  if (pre == "smollm") return PreConfig{"smollm", {kDigitRegex, kGpt2Regex}, false};
  if (pre == "gpt2" || pre == "gpt-2") return PreConfig{"gpt2", {kGpt2Regex}, false};
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    return PreConfig{"llama-bpe", {kLlama3Regex}, true};
  }
  if (pre == "qwen2" || pre == "deepseek-r1-qwen") return PreConfig{"qwen2", {kQwen2Regex}, false};
  return std::nullopt;
}

const std::string& EmptyString() {
  static const std::string* empty = new std::string();
  return *empty;
}

}  // namespace

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

StatusOr<Tokenizer> Tokenizer::FromSpec(TokenizerSpec spec) {
  const std::optional<PreConfig> config = LookUpPre(spec.pre);
  if (!config) {
    return UnimplementedError("tokenizer: pre-tokenizer '" + spec.pre +
                              "' is not supported (supported: smollm, gpt2, llama-bpe, qwen2)");
  }
  const int64_t n = static_cast<int64_t>(spec.tokens.size());
  if (n == 0 || n > INT32_MAX) {
    return InvalidArgumentError("tokenizer: vocabulary size " + std::to_string(n));
  }
  if (spec.token_types.empty()) spec.token_types.assign(n, kTokenTypeNormal);
  if (static_cast<int64_t>(spec.token_types.size()) != n) {
    return InvalidArgumentError("tokenizer: " + std::to_string(spec.token_types.size()) +
                                " token types for " + std::to_string(n) + " tokens");
  }
  for (int32_t id : {spec.bos_id, spec.eos_id}) {
    if (id < -1 || id >= n) {
      return InvalidArgumentError("tokenizer: bos/eos id " + std::to_string(id) +
                                  " outside the vocabulary of " + std::to_string(n));
    }
  }

  Tokenizer t;
  t.pre_ = config->canonical;
  t.ignore_merges_ = config->ignore_merges;
  t.bos_id_ = spec.bos_id;
  t.eos_id_ = spec.eos_id;
  t.tokens_ = std::move(spec.tokens);
  t.token_types_ = std::move(spec.token_types);
  t.token_to_id_.reserve(n);
  t.token_bytes_.resize(n);
  t.specials_by_first_byte_.resize(256);
  for (int32_t id = 0; id < n; ++id) {
    const std::string& text = t.tokens_[id];
    t.token_to_id_.emplace(text, id);  // the first of duplicate strings wins
    const int32_t type = t.token_types_[id];
    if (type == kTokenTypeControl || type == kTokenTypeUserDefined) {
      t.token_bytes_[id] = text;
      if (!text.empty()) t.specials_by_first_byte_[static_cast<uint8_t>(text[0])].push_back(id);
    } else {
      ByteLevelDecode(text, &t.token_bytes_[id]);
    }
  }
  for (auto& ids : t.specials_by_first_byte_) {
    std::stable_sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) {
      return t.tokens_[a].size() > t.tokens_[b].size();
    });
  }
  const auto& alphabet = ByteLevelAlphabet();
  t.covers_all_bytes_ = true;
  for (int b = 0; b < 256; ++b) {
    auto it = t.token_to_id_.find(alphabet[b]);
    t.byte_token_[b] = it == t.token_to_id_.end() ? -1 : it->second;
    if (it == t.token_to_id_.end()) t.covers_all_bytes_ = false;
  }
  t.merges_.reserve(spec.merges.size());
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    auto l = t.token_to_id_.find(left);
    auto r = t.token_to_id_.find(right);
    auto m = t.token_to_id_.find(left + right);
    if (l == t.token_to_id_.end() || r == t.token_to_id_.end() || m == t.token_to_id_.end()) {
      continue;
    }
    t.merges_.emplace(PairKey(l->second, r->second),
                      Merge{static_cast<int32_t>(rank), m->second});  // the best rank wins
  }
  CANOPY_ASSIGN_OR_RETURN(t.pre_tokenizer_, PreTokenizer::Create(config->regexes));
  t.cache_ = std::make_unique<BpeCache>();
  return t;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  size_t segment_start = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto& candidates = specials_by_first_byte_[static_cast<uint8_t>(text[pos])];
    int32_t found = -1;
    for (int32_t id : candidates) {  // longest first
      if (!parse_special && token_types_[id] != kTokenTypeUserDefined) continue;
      const std::string& s = tokens_[id];
      if (text.size() - pos >= s.size() &&
          std::memcmp(text.data() + pos, s.data(), s.size()) == 0) {
        found = id;
        break;
      }
    }
    if (found < 0) {
      ++pos;
      continue;
    }
    EncodeText(text.substr(segment_start, pos - segment_start), &out);
    out.push_back(found);
    pos += tokens_[found].size();
    segment_start = pos;
  }
  EncodeText(text.substr(segment_start), &out);
  return out;
}

// Splits off invalid UTF-8 (runs of bytes that start no valid character), pre-tokenizes
// the valid runs, and BPE-encodes every piece.
void Tokenizer::EncodeText(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = pos;
    int len;
    while (end < text.size() && (len = Utf8CharLength(text, end)) > 0) end += len;
    if (end > pos) pre_tokenizer_->Split(text.substr(pos, end - pos), &pieces);
    size_t bad_end = end;
    while (bad_end < text.size() && Utf8CharLength(text, bad_end) == 0) ++bad_end;
    if (bad_end > end) pieces.push_back(text.substr(end, bad_end - end));
    pos = bad_end;
  }
  for (std::string_view piece : pieces) EncodePiece(piece, out);
}

void Tokenizer::EncodePiece(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.empty()) return;
  if (piece.size() == 1) {
    const int32_t id = byte_token_[static_cast<uint8_t>(piece[0])];
    if (id >= 0) out->push_back(id);
    return;
  }
  const bool cacheable = piece.size() <= BpeCache::kMaxWordBytes;
  std::string key;
  if (cacheable) {
    key.assign(piece);
    std::lock_guard<std::mutex> lock(cache_->mu);
    auto it = cache_->map.find(key);
    if (it != cache_->map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t first = out->size();
  if (ignore_merges_) {
    auto it = token_to_id_.find(ByteLevelEncode(piece));
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
    } else {
      Bpe(piece, out);
    }
  } else {
    Bpe(piece, out);
  }
  if (cacheable) {
    std::vector<int32_t> ids(out->begin() + first, out->end());
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->map.size() >= BpeCache::kMaxEntries) cache_->map.clear();
    cache_->map.emplace(std::move(key), std::move(ids));
  }
}

// HF tokenizers' Word::merge_all: a min-heap of candidate merges ordered by (rank,
// position); entries made stale by an earlier merge are recognised and skipped.
void Tokenizer::Bpe(std::string_view piece, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  // Bytes without a token are left out, their neighbours becoming adjacent (HF's
  // Word::from without an unk token).
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (char c : piece) {
    const int32_t id = byte_token_[static_cast<uint8_t>(c)];
    if (id < 0) continue;
    const int32_t i = static_cast<int32_t>(symbols.size());
    if (i > 0) symbols.back().next = i;
    symbols.push_back({id, i - 1, -1, true});
  }
  const int32_t n = static_cast<int32_t>(symbols.size());
  if (n == 0) return;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(PairKey(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.rank, pos, it->second.merged_id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(PairKey(left.id, right.id));
    if (it == merges_.end() || it->second.merged_id != top.merged_id) continue;  // stale
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out->push_back(symbols[i].id);
}

std::string Tokenizer::Decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += TokenBytes(id);
  return out;
}

const std::string& Tokenizer::TokenBytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return EmptyString();
  return token_bytes_[id];
}

std::optional<int32_t> Tokenizer::TokenId(std::string_view piece) const {
  auto it = token_to_id_.find(std::string(piece));
  if (it == token_to_id_.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::token_type(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return kTokenTypeUnused;
  return token_types_[id];
}

std::vector<int32_t> Tokenizer::EndOfTurnIds() const {
  std::vector<int32_t> ids;
  if (eos_id_ >= 0) ids.push_back(eos_id_);
  for (const char* name : {"<|im_end|>", "<|eot_id|>", "<|endoftext|>"}) {
    std::optional<int32_t> id = TokenId(name);
    if (id && std::find(ids.begin(), ids.end(), *id) == ids.end()) ids.push_back(*id);
  }
  return ids;
}

}  // namespace canopy
