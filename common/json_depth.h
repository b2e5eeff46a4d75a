// How deeply a JSON text nests, found by a scan of its brackets (strings and escapes
// skipped), before it is parsed. nlohmann::json parses deep input fine but copies and
// compares it recursively: a line of 100,000 '[' crashes the process on its stack. Readers
// of untrusted JSON lines (datasets, results files) refuse a line deeper than
// kMaxJsonDepth instead.
#pragma once

#include <cstdint>
#include <string_view>

namespace canopy {

// Deeper than any dataset or result record needs (they nest 2-4 levels).
inline constexpr int kMaxJsonDepth = 64;

// The largest count of open '[' / '{' outside strings at any point of `text`. Malformed
// text gets a number too; the parser reports what else is wrong with it.
inline int JsonNestingDepth(std::string_view text) {
  int depth = 0;
  int deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

}  // namespace canopy
