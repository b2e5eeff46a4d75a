// libFuzzer target: ParseResults on arbitrary bytes (a results.jsonl a resumed job reads,
// possibly torn by a crash, possibly not canopy's). See tests/fuzz/README.md. Traps when the
// torn tail is not a suffix of the input, when a kept record does not survive
// ResultToLine -> parse unchanged in its id, or when ids repeat.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "coordinator/results.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  canopy::LoadedResults r = canopy::ParseResults(text);
  if (r.file_bytes != size || r.valid_bytes > r.file_bytes) __builtin_trap();
  // What is cut is at most the last line, and holds no newline.
  if (text.substr(r.valid_bytes).find('\n') != std::string_view::npos) __builtin_trap();
  if (r.foreign_lines > 0 && r.first_foreign_line < 1) __builtin_trap();
  std::set<std::string> ids;
  for (const canopy::ResultRecord& rec : r.records) {
    if (!ids.insert(rec.id).second) __builtin_trap();
    canopy::LoadedResults again = canopy::ParseResults(canopy::ResultToLine(rec) + "\n");
    if (again.records.size() != 1 || again.records[0].id != rec.id || !again.issues.empty()) {
      __builtin_trap();
    }
  }
  for (const std::string& issue : r.issues) {
    if (issue.empty()) __builtin_trap();
  }
  return 0;
}
