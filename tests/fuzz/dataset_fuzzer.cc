// libFuzzer target: ParseDataset on arbitrary bytes (a dataset file a user hands canopy).
// See tests/fuzz/README.md. Traps when a parse keeps a problem without a question, with an
// id seen twice, or on a line that does not exist, or reports an error with no message.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "coordinator/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  // The first byte picks options, so named fields and offsets/limits are fuzzed as well.
  canopy::DatasetOptions opts;
  if (size > 0 && (data[0] & 1)) opts.answer_field = "answer";
  if (size > 0 && (data[0] & 2)) opts.id_field = "id";
  if (size > 0 && (data[0] & 4)) opts.limit = data[0] >> 4;
  if (size > 0 && (data[0] & 8)) opts.offset = 1;
  auto ds = canopy::ParseDataset(text, "fuzz/data.jsonl", opts);
  if (!ds.ok()) {
    if (ds.status().message().empty()) __builtin_trap();
    return 0;
  }
  int64_t lines = 1;
  for (char c : text) lines += c == '\n';
  std::set<std::string> ids;
  for (const canopy::Problem& p : ds->problems) {
    if (p.question.empty() || !ids.insert(p.id).second) __builtin_trap();
    if (p.line_number < 1 || p.line_number > lines) __builtin_trap();
    if (ds->graded && p.gold.empty()) __builtin_trap();
  }
  for (const canopy::DatasetError& e : ds->errors) {
    if (e.message.empty() || e.line_number < 1 || e.line_number > lines) __builtin_trap();
  }
  if (opts.limit >= 0 && static_cast<int64_t>(ds->problems.size()) > opts.limit) __builtin_trap();
  return 0;
}
