#include "worker/model/unicode.h"

#include <cstdint>

namespace canopy {
namespace {

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool StandsForItself(int b) {
  return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Alphabet {
  std::array<std::string, 256> byte_to_text;
  std::array<uint32_t, 256> byte_to_cp;
  // Inverse over code points < 0x200 (all of the alphabet); -1 where unmapped.
  std::array<int16_t, 0x200> cp_to_byte;

  Alphabet() {
    cp_to_byte.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      byte_to_cp[b] = StandsForItself(b) ? static_cast<uint32_t>(b) : next++;
      AppendUtf8(byte_to_cp[b], &byte_to_text[b]);
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& GetAlphabet() {
  static const Alphabet* alphabet = new Alphabet();
  return *alphabet;
}

}  // namespace

int Utf8CharLength(std::string_view s, size_t pos) {
  const size_t n = s.size() - pos;
  auto at = [&](size_t i) { return static_cast<uint8_t>(s[pos + i]); };
  auto cont = [&](size_t i) { return i < n && (at(i) & 0xC0) == 0x80; };
  const uint8_t c = at(0);
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;  // a continuation byte or an overlong 2-byte lead
  if (c < 0xE0) return cont(1) ? 2 : 0;
  if (c < 0xF0) {
    if (n < 2) return 0;
    const uint8_t c1 = at(1);
    if (c == 0xE0 && c1 < 0xA0) return 0;   // overlong
    if (c == 0xED && c1 >= 0xA0) return 0;  // surrogate
    return cont(1) && cont(2) ? 3 : 0;
  }
  if (c < 0xF5) {
    if (n < 2) return 0;
    const uint8_t c1 = at(1);
    if (c == 0xF0 && c1 < 0x90) return 0;   // overlong
    if (c == 0xF4 && c1 >= 0x90) return 0;  // above U+10FFFF
    return cont(1) && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

const std::array<std::string, 256>& ByteLevelAlphabet() { return GetAlphabet().byte_to_text; }

std::string ByteLevelEncode(std::string_view bytes) {
  const auto& table = GetAlphabet().byte_to_text;
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += table[static_cast<uint8_t>(c)];
  return out;
}

void ByteLevelDecode(std::string_view text, std::string* out) {
  const auto& alphabet = GetAlphabet();
  size_t pos = 0;
  while (pos < text.size()) {
    const int len = Utf8CharLength(text, pos);
    if (len == 0) {
      out->push_back(text[pos++]);
      continue;
    }
    uint32_t cp = static_cast<uint8_t>(text[pos]);
    if (len == 2) cp = ((cp & 0x1F) << 6) | (static_cast<uint8_t>(text[pos + 1]) & 0x3F);
    if (len <= 2 && cp < alphabet.cp_to_byte.size() && alphabet.cp_to_byte[cp] >= 0) {
      out->push_back(static_cast<char>(alphabet.cp_to_byte[cp]));
    } else {
      out->append(text.substr(pos, len));
    }
    pos += len;
  }
}

}  // namespace canopy
