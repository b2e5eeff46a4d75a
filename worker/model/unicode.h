// UTF-8 validation and GPT-2's byte-level alphabet, for the BPE tokenizer.
//
// GPT-2's byte-to-unicode map gives every byte a printable character: '!'..'~', '¡'..'¬'
// and '®'..'ÿ' stand for themselves; the other 68 bytes (controls, space, ...) map to
// U+0100 upwards in byte order, so the space 0x20 is 'Ġ' (U+0120) and '\n' is 'Ċ'.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace canopy {

// Length (1-4) of the well-formed UTF-8 character starting at s[pos] (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or 0 when there is none.
int Utf8CharLength(std::string_view s, size_t pos);

// byte → UTF-8 of the character standing for it.
const std::array<std::string, 256>& ByteLevelAlphabet();

// Raw bytes → byte-level text ("a b" → "aĠb").
std::string ByteLevelEncode(std::string_view bytes);

// Byte-level text → raw bytes, appended to *out. Characters outside the alphabet (and
// invalid UTF-8) are copied through unchanged.
void ByteLevelDecode(std::string_view text, std::string* out);

}  // namespace canopy
