// Answer extraction and grading for math reasoning benchmarks: pull the final answer out of
// a model's output (the last \boxed{...}, GSM8K's "#### N", "The answer is X", or the last
// number), normalise it in the style of the MATH (Hendrycks) and Qwen2.5-Math graders, and
// decide whether a prediction matches a gold answer. Pure functions: no I/O, no state.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace canopy {

// The content of the last \boxed{...} or \fbox{...} in `text`, braces matched (nested braces
// are kept), or the token after "\boxed " (as in "\boxed 5"). Trimmed. nullopt when there is
// none or its braces never close.
std::optional<std::string> ExtractBoxed(std::string_view text);

// The trimmed text after the last "####" (GSM8K's gold format); nullopt if absent or empty.
std::optional<std::string> ExtractGsm8kAnswer(std::string_view text);

// The last number in `text`: an optional minus sign, digits with optional thousands commas
// (removed in the result), an optional decimal part. "It costs $1,250.50." -> "1250.50".
std::optional<std::string> ExtractLastNumber(std::string_view text);

// A model's final answer: the last boxed answer, else the text after the last "the answer
// is" / "answer:" (case-insensitive, to the end of that line, trailing period dropped; a
// number there that ends a clause, as in "21, which is ..." or "7. Explanation: ...", alone;
// of an equation there, the right-hand side of its last "="), else the last number.
std::optional<std::string> ExtractAnswer(std::string_view model_output);

// A canonical form for string comparison: drops $, \left/\right, spacing commands, spaces,
// trailing periods, degree marks, percent signs, trailing units (\text{ cm}, \mathrm{m},
// "5 cm"), thousands separators, a leading "x =" and an enclosing \boxed{}; unwraps a lone
// \text{...}; rewrites \dfrac and \tfrac as \frac, \frac12 as \frac{1}{2}, 3/4 as
// \frac{3}{4} and \sqrt2 as \sqrt{2}.
std::string NormalizeAnswer(std::string_view answer);

// The value of a normalised-or-raw numeric answer: integers, decimals, scientific notation
// (1e-5, 1.5\times10^{-5}), a/b, \frac{a}{b}, with a sign and an optional percent sign
// (50% is 50). nullopt for anything else.
std::optional<double> ParseNumericAnswer(std::string_view answer);

// True when the normalised strings are equal, or both are numbers agreeing within a relative
// 1e-4 (exactly when both are written as integers; a side written with % may also match its
// value / 100 or * 100), or both are tuples or
// intervals with the same brackets whose elements are pairwise equivalent.
bool AnswersEquivalent(std::string_view prediction, std::string_view gold);

enum class GoldFormat {
  kPlain,  // the field is the answer
  kGsm8k,  // a GSM8K solution ending in "#### N"
  kBoxed,  // a solution whose last \boxed{} is the answer
};

// The gold answer inside a dataset field. kPlain trims; kGsm8k and kBoxed extract, returning
// "" when the marker is missing.
std::string GoldAnswer(std::string_view field_value, GoldFormat format);

}  // namespace canopy
