#include "search/answer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <vector>

namespace canopy {
namespace {

bool IsSpace(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsAlpha(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

void ReplaceAll(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  size_t pos = 0;
  while ((pos = s.find(from, pos)) != std::string::npos) {
    s.replace(pos, from.size(), to);
    pos += to.size();
  }
}

// Index one past the '}' matching the '{' at `open`, or npos.
size_t MatchBrace(std::string_view s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;  // an escaped brace, \{ or \}
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i + 1;
  }
  return std::string_view::npos;
}

// The argument of the command ending at `pos`: a braced group or one token.
std::optional<std::string> BoxedArgument(std::string_view text, size_t pos) {
  if (pos < text.size() && text[pos] == '{') {
    size_t end = MatchBrace(text, pos);
    if (end == std::string_view::npos) return std::nullopt;
    return std::string(Trim(text.substr(pos + 1, end - pos - 2)));
  }
  if (pos >= text.size() || !IsSpace(text[pos])) return std::nullopt;
  while (pos < text.size() && IsSpace(text[pos])) ++pos;
  size_t end = pos;
  while (end < text.size() && !IsSpace(text[end]) && text[end] != '$') ++end;
  if (end == pos) return std::nullopt;
  return std::string(text.substr(pos, end - pos));
}

// Removes "{,}" and thousands commas from a string that is wholly a grouped number.
std::string StripThousands(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  size_t lead = 0;
  while (i < s.size() && IsDigit(s[i])) ++i, ++lead;
  if (lead == 0 || lead > 3) return std::string(s);
  int groups = 0;
  while (i + 3 < s.size() + 0 && s[i] == ',' && IsDigit(s[i + 1]) && IsDigit(s[i + 2]) &&
         IsDigit(s[i + 3]) && (i + 4 == s.size() || !IsDigit(s[i + 4]))) {
    i += 4;
    ++groups;
  }
  if (groups == 0) return std::string(s);
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i;
  }
  if (i != s.size()) return std::string(s);
  std::string out;
  for (char c : s) {
    if (c != ',') out.push_back(c);
  }
  return out;
}

// Removes every `\cmd{...}` (keeping nothing) when `keep_content` is false, or replaces it by
// its content when true.
void RewriteCommand(std::string& s, std::string_view cmd, bool keep_content) {
  size_t pos = 0;
  while ((pos = s.find(cmd, pos)) != std::string::npos) {
    size_t open = pos + cmd.size();
    if (open >= s.size() || s[open] != '{') {
      pos = open;
      continue;
    }
    size_t end = MatchBrace(s, open);
    if (end == std::string::npos) return;
    std::string content = keep_content ? s.substr(open + 1, end - open - 2) : std::string();
    s.replace(pos, end - pos, content);
  }
}

// \frac12 -> \frac{1}{2}, \frac1{b} -> \frac{1}{b}, \frac{a}2 -> \frac{a}{2}.
std::string FixFracs(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s.compare(i, 5, "\\frac") != 0 || (i + 5 < s.size() && IsAlpha(s[i + 5]))) {
      out.push_back(s[i++]);
      continue;
    }
    out += "\\frac";
    i += 5;
    for (int arg = 0; arg < 2 && i < s.size(); ++arg) {
      if (s[i] == '{') {
        size_t end = MatchBrace(s, i);
        if (end == std::string::npos) end = s.size();
        out.append(s, i, end - i);
        i = end;
      } else if (s[i] != '\\') {
        out.push_back('{');
        out.push_back(s[i++]);
        out.push_back('}');
      } else {
        break;
      }
    }
  }
  return out;
}

// \sqrt2 -> \sqrt{2}.
std::string FixSqrt(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    out.push_back(s[i]);
    if (s.compare(i, 5, "\\sqrt") == 0 && i + 5 < s.size() && s[i + 5] != '{' &&
        s[i + 5] != '[' && s[i + 5] != '\\' && !IsAlpha(s[i + 5])) {
      out += "sqrt{";
      out.push_back(s[i + 5]);
      out.push_back('}');
      i += 5;
    }
  }
  return out;
}

bool IsUnsignedInt(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), IsDigit);
}

// A strict decimal: digits with an optional fraction and exponent (no inf/nan/hex).
std::optional<double> ParseDecimal(std::string_view s) {
  size_t i = 0, digits = 0;
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && IsDigit(s[i])) ++i, ++digits;
  }
  if (digits == 0) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    size_t j = i + 1;
    if (j < s.size() && (s[j] == '-' || s[j] == '+')) ++j;
    if (j >= s.size() || !IsDigit(s[j])) return std::nullopt;
    while (j < s.size() && IsDigit(s[j])) ++j;
    i = j;
  }
  if (i != s.size()) return std::nullopt;
  std::string copy(s);
  return std::strtod(copy.c_str(), nullptr);
}

// A braced group {x} or a single character: its content, advancing `i`.
std::optional<std::string_view> Group(std::string_view s, size_t& i) {
  if (i >= s.size()) return std::nullopt;
  if (s[i] == '{') {
    size_t end = MatchBrace(s, i);
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view g = s.substr(i + 1, end - i - 2);
    i = end;
    return g;
  }
  return s.substr(i++, 1);
}

std::optional<double> ParseNumberRec(std::string_view s, int depth);

// 10^{k} or 10^k.
std::optional<double> ParsePowerOfTen(std::string_view s, int depth) {
  if (!StartsWith(s, "10^")) return std::nullopt;
  size_t i = 3;
  std::optional<std::string_view> exp;
  if (i < s.size() && s[i] == '{') {
    exp = Group(s, i);
  } else {
    size_t j = i;
    if (j < s.size() && s[j] == '-') ++j;
    while (j < s.size() && IsDigit(s[j])) ++j;
    exp = s.substr(i, j - i);
    i = j;
  }
  if (!exp || i != s.size()) return std::nullopt;
  std::optional<double> e = ParseNumberRec(*exp, depth + 1);
  if (!e) return std::nullopt;
  return std::pow(10.0, *e);
}

std::optional<double> ParseNumberRec(std::string_view s, int depth) {
  s = Trim(s);
  if (depth > 4 || s.empty()) return std::nullopt;
  while (s.size() >= 2 && s.front() == '{' && MatchBrace(s, 0) == s.size()) {
    s = Trim(s.substr(1, s.size() - 2));
  }
  if (s.empty()) return std::nullopt;
  if (s.front() == '-' || s.front() == '+') {
    std::string_view rest = s.substr(1);
    if (rest.empty() || rest.front() == '-' || rest.front() == '+') return std::nullopt;
    std::optional<double> v = ParseNumberRec(rest, depth + 1);
    if (!v) return std::nullopt;
    return s.front() == '-' ? -*v : *v;
  }
  if (std::optional<double> v = ParseDecimal(s)) return v;
  if (StartsWith(s, "\\frac")) {
    size_t i = 5;
    std::optional<std::string_view> num = Group(s, i);
    std::optional<std::string_view> den = Group(s, i);
    if (!num || !den || i != s.size()) return std::nullopt;
    std::optional<double> a = ParseNumberRec(*num, depth + 1);
    std::optional<double> b = ParseNumberRec(*den, depth + 1);
    if (!a || !b || *b == 0) return std::nullopt;
    return *a / *b;
  }
  if (std::optional<double> v = ParsePowerOfTen(s, depth)) return v;
  for (std::string_view times : {"\\times", "\\cdot", "*"}) {
    size_t pos = s.find(times);
    if (pos == std::string_view::npos) continue;
    std::string_view rhs = Trim(s.substr(pos + times.size()));
    std::optional<double> m = ParseDecimal(Trim(s.substr(0, pos)));
    std::optional<double> p = ParsePowerOfTen(rhs, depth);
    if (m && p) return *m * *p;
    return std::nullopt;
  }
  size_t slash = s.find('/');
  if (slash != std::string_view::npos && s.find('/', slash + 1) == std::string_view::npos) {
    std::optional<double> a = ParseDecimal(Trim(s.substr(0, slash)));
    std::optional<double> b = ParseDecimal(Trim(s.substr(slash + 1)));
    if (!a || !b || *b == 0) return std::nullopt;
    return *a / *b;
  }
  return std::nullopt;
}

bool NumbersClose(double a, double b) {
  if (a == b) return true;
  return std::fabs(a - b) <= 1e-4 * std::max(std::fabs(a), std::fabs(b));
}

bool IsInteger(std::string_view s) {
  if (!s.empty() && (s.front() == '-' || s.front() == '+')) s.remove_prefix(1);
  return IsUnsignedInt(s);
}

bool HasPercent(std::string_view s) { return s.find('%') != std::string_view::npos; }

// Splits at commas outside (), [], {}.
std::vector<std::string_view> SplitTopLevel(std::string_view s) {
  std::vector<std::string_view> parts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '(' || c == '[' || c == '{') ++depth;
    if (c == ')' || c == ']' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      parts.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(s.substr(start));
  return parts;
}

bool IsOpen(char c) { return c == '(' || c == '['; }
bool IsClose(char c) { return c == ')' || c == ']'; }

bool EquivalentNormalized(const std::string& p, const std::string& g, bool p_percent,
                          bool g_percent, int depth);

// Tuples "(a,b)", intervals "[a,b)" and bare lists "a,b": element-wise.
bool SequencesEquivalent(const std::string& p, const std::string& g, int depth) {
  std::string_view pv = p, gv = g;
  bool p_wrapped = pv.size() >= 2 && IsOpen(pv.front()) && IsClose(pv.back());
  bool g_wrapped = gv.size() >= 2 && IsOpen(gv.front()) && IsClose(gv.back());
  if (p_wrapped != g_wrapped) return false;
  if (p_wrapped) {
    if (pv.front() != gv.front() || pv.back() != gv.back()) return false;
    pv = pv.substr(1, pv.size() - 2);
    gv = gv.substr(1, gv.size() - 2);
  }
  std::vector<std::string_view> ps = SplitTopLevel(pv), gs = SplitTopLevel(gv);
  if (ps.size() != gs.size() || (ps.size() < 2 && !p_wrapped)) return false;
  for (size_t i = 0; i < ps.size(); ++i) {
    std::string a = NormalizeAnswer(ps[i]), b = NormalizeAnswer(gs[i]);
    if (!EquivalentNormalized(a, b, HasPercent(ps[i]), HasPercent(gs[i]), depth + 1)) {
      return false;
    }
  }
  return true;
}

bool EquivalentNormalized(const std::string& p, const std::string& g, bool p_percent,
                          bool g_percent, int depth) {
  if (p == g) return true;
  if (depth > 3) return false;
  std::optional<double> a = ParseNumberRec(p, 0), b = ParseNumberRec(g, 0);
  if (a && b) {
    // Two integers must agree exactly: 70001 is not 70000, whatever the tolerance says.
    if (IsInteger(p) && IsInteger(g) && p_percent == g_percent) return *a == *b;
    if (NumbersClose(*a, *b)) return true;
    if (p_percent != g_percent) {
      // One side says "50%", the other may write it as 0.5.
      double scale = p_percent ? 100.0 : 0.01;
      return NumbersClose(*a, *b * scale);
    }
    return false;
  }
  if (a || b) return false;
  if (p.find(',') != std::string::npos || g.find(',') != std::string::npos) {
    return SequencesEquivalent(p, g, depth);
  }
  return false;
}

// Whether `s` is a short variable name such as x, y_1, k or \alpha.
bool IsVariableName(std::string_view s) {
  s = Trim(s);
  if (s.empty() || s.size() > 6) return false;
  if (s.front() == '\\') {
    return s.size() > 1 && std::all_of(s.begin() + 1, s.end(), IsAlpha);
  }
  if (!IsAlpha(s.front())) return false;
  if (s.size() == 1) return true;
  if (s.size() <= 2) return std::isalnum(static_cast<unsigned char>(s[1])) != 0;
  return s[1] == '_' && std::all_of(s.begin() + 2, s.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '{' || c == '}';
         });
}

// "5 cm" -> "5", "18 dollars" -> "18": a number followed by words only.
std::string StripTrailingWords(const std::string& s) {
  size_t space = s.find(' ');
  if (space == std::string::npos) return s;
  std::string head(Trim(std::string_view(s).substr(0, space)));
  std::string_view tail = Trim(std::string_view(s).substr(space));
  if (!ParseNumberRec(StripThousands(head), 0)) return s;
  // A single letter is more likely a variable ("3 n") than a unit.
  if (tail.size() < 2 || !IsAlpha(tail[0]) || !IsAlpha(tail[1])) return s;
  for (char c : tail) {
    if (!IsAlpha(c) && c != ' ' && c != '^' && c != '2' && c != '3' && c != '/' && c != '.') {
      return s;
    }
  }
  return head;
}

// `s` up to the end of a leading number ($, sign, thousands commas and decimals allowed) when a
// full stop and a space, or a comma or semicolon and a word, comes right after it; else `s`
// ("2, 3 and 4" is a list, kept whole).
std::string_view NumberEndingAClause(std::string_view s) {
  size_t i = 0;
  if (i < s.size() && s[i] == '$') ++i;
  if (i < s.size() && s[i] == '-') ++i;
  const size_t digits = i;
  while (i < s.size()) {
    if (IsDigit(s[i])) {
      ++i;
    } else if (s[i] == ',' && i > digits && i + 3 < s.size() && IsDigit(s[i + 1]) && IsDigit(s[i + 2]) &&
               IsDigit(s[i + 3]) && (i + 4 == s.size() || !IsDigit(s[i + 4]))) {
      i += 4;  // a thousands separator
    } else if (s[i] == '.' && i > digits && i + 1 < s.size() && IsDigit(s[i + 1])) {
      ++i;
    } else {
      break;
    }
  }
  if (i == digits || i + 1 >= s.size()) return s;
  if (s[i + 1] != ' ' && s[i + 1] != '\t') return s;
  if (s[i] == '.') return s.substr(0, i);
  if (s[i] != ',' && s[i] != ';') return s;
  std::string_view after = Trim(s.substr(i + 1));
  const bool word = !after.empty() && IsAlpha(after.front());
  return word ? s.substr(0, i) : s;
}

}  // namespace

std::optional<std::string> ExtractBoxed(std::string_view text) {
  size_t pos = text.size();
  while (pos > 0) {
    size_t boxed = text.rfind("\\boxed", pos - 1);
    size_t fbox = text.rfind("\\fbox", pos - 1);
    size_t at;
    size_t len;
    if (boxed == std::string_view::npos && fbox == std::string_view::npos) return std::nullopt;
    if (fbox == std::string_view::npos || (boxed != std::string_view::npos && boxed > fbox)) {
      at = boxed;
      len = 6;
    } else {
      at = fbox;
      len = 5;
    }
    if (std::optional<std::string> arg = BoxedArgument(text, at + len)) return arg;
    pos = at;
  }
  return std::nullopt;
}

std::optional<std::string> ExtractGsm8kAnswer(std::string_view text) {
  size_t pos = text.rfind("####");
  if (pos == std::string_view::npos) return std::nullopt;
  std::string_view rest = Trim(text.substr(pos + 4));
  if (rest.empty()) return std::nullopt;
  return std::string(rest);
}

std::optional<std::string> ExtractLastNumber(std::string_view text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    bool starts = IsDigit(text[i]) ||
                  (text[i] == '.' && i + 1 < text.size() && IsDigit(text[i + 1]) &&
                   (i == 0 || !IsDigit(text[i - 1])));
    if (!starts) {
      ++i;
      continue;
    }
    size_t begin = i;
    std::string number;
    if (begin > 0 && text[begin - 1] == '-') number.push_back('-');
    if (text[i] == '.') number.push_back('0');
    while (i < text.size()) {
      if (IsDigit(text[i])) {
        number.push_back(text[i++]);
      } else if (text[i] == ',' && i + 3 < text.size() + 0 && IsDigit(text[i + 1]) &&
                 IsDigit(text[i + 2]) && IsDigit(text[i + 3]) &&
                 (i + 4 == text.size() || !IsDigit(text[i + 4]))) {
        ++i;  // a thousands separator
      } else {
        break;
      }
    }
    if (i + 1 < text.size() && text[i] == '.' && IsDigit(text[i + 1])) {
      number.push_back(text[i++]);
      while (i < text.size() && IsDigit(text[i])) number.push_back(text[i++]);
    }
    last = number;
  }
  return last;
}

std::optional<std::string> ExtractAnswer(std::string_view model_output) {
  if (std::optional<std::string> boxed = ExtractBoxed(model_output)) return boxed;
  std::string lower(model_output);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  size_t best = std::string::npos;
  size_t best_len = 0;
  for (std::string_view marker : {"the answer is", "answer:"}) {
    size_t pos = lower.rfind(marker);
    if (pos != std::string::npos && (best == std::string::npos || pos > best)) {
      best = pos;
      best_len = marker.size();
    }
  }
  if (best != std::string::npos) {
    std::string_view rest = model_output.substr(best + best_len);
    size_t eol = rest.find('\n');
    if (eol != std::string_view::npos) rest = rest.substr(0, eol);
    rest = Trim(rest);
    if (!rest.empty() && rest.front() == ':') rest = Trim(rest.substr(1));
    while (!rest.empty() && rest.back() == '.') rest = Trim(rest.substr(0, rest.size() - 1));
    // "the answer is 21, which is the number of ..." / "the answer is 7. Explanation: ...": a
    // number that ends a clause is the answer, and the rest of the line is prose about it.
    rest = NumberEndingAClause(rest);
    // "the answer is 21 - 8 = 13": the result of the equation is the answer.
    size_t eq = rest.rfind('=');
    if (eq != std::string_view::npos && Trim(rest.substr(eq + 1)).size() > 0) rest = Trim(rest.substr(eq + 1));
    if (!rest.empty()) return std::string(rest);
  }
  return ExtractLastNumber(model_output);
}

std::string NormalizeAnswer(std::string_view answer) {
  std::string s(Trim(answer));
  ReplaceAll(s, "\n", " ");
  ReplaceAll(s, "\\$", "");
  ReplaceAll(s, "$", "");
  s = std::string(Trim(s));
  if (StartsWith(s, "\\boxed") || StartsWith(s, "\\fbox")) {
    if (std::optional<std::string> inner = ExtractBoxed(s)) s = *inner;
  }
  ReplaceAll(s, "\\!", "");
  ReplaceAll(s, "\\,", " ");
  ReplaceAll(s, "\\;", " ");
  ReplaceAll(s, "\\:", " ");
  ReplaceAll(s, "\\ ", " ");
  ReplaceAll(s, "~", " ");
  ReplaceAll(s, "\\displaystyle", "");
  ReplaceAll(s, "\\tfrac", "\\frac");
  ReplaceAll(s, "\\dfrac", "\\frac");
  ReplaceAll(s, "\\left", "");
  ReplaceAll(s, "\\right", "");
  ReplaceAll(s, "^{\\circ}", "");
  ReplaceAll(s, "^\\circ", "");
  ReplaceAll(s, "\\%", "");
  ReplaceAll(s, "%", "");
  ReplaceAll(s, "{,}", "");
  // Trailing units: "5 \text{ cm}", "72 \mathrm{~m}", "3\mbox{ inches}".
  for (bool changed = true; changed;) {
    changed = false;
    std::string_view t = Trim(s);
    if (t.empty() || t.back() != '}') break;
    for (std::string_view cmd : {"\\text", "\\mathrm", "\\mbox", "\\textbf"}) {
      size_t pos = t.rfind(std::string(cmd) + "{");
      if (pos == std::string_view::npos || pos == 0) continue;
      if (MatchBrace(t, pos + cmd.size()) != t.size()) continue;
      std::string head(Trim(t.substr(0, pos)));
      if (head.empty() || head.back() == '{' || head.back() == '(' || head.back() == ',') {
        continue;
      }
      if (!ParseNumberRec(StripThousands(head), 0) && head.back() != '}') continue;
      s = head;
      changed = true;
      break;
    }
  }
  RewriteCommand(s, "\\text", true);
  RewriteCommand(s, "\\textbf", true);
  RewriteCommand(s, "\\mbox", true);
  s = std::string(Trim(s));
  while (!s.empty() && s.back() == '.') s = std::string(Trim(s.substr(0, s.size() - 1)));
  s = StripTrailingWords(s);
  // "x = 5" -> "5" (one '=' and a short variable on the left).
  size_t eq = s.find('=');
  if (eq != std::string::npos && s.find('=', eq + 1) == std::string::npos &&
      IsVariableName(std::string_view(s).substr(0, eq))) {
    s = std::string(Trim(std::string_view(s).substr(eq + 1)));
  }
  ReplaceAll(s, " .", " 0.");
  ReplaceAll(s, "{.", "{0.");
  if (StartsWith(s, ".")) s = "0" + s;
  if (StartsWith(s, "-.")) s = "-0" + s.substr(1);
  s.erase(std::remove_if(s.begin(), s.end(), IsSpace), s.end());
  s = StripThousands(s);
  s = FixFracs(s);
  s = FixSqrt(s);
  // "3/4" -> "\frac{3}{4}".
  size_t slash = s.find('/');
  if (slash != std::string::npos) {
    std::string_view a = std::string_view(s).substr(0, slash);
    std::string_view b = std::string_view(s).substr(slash + 1);
    bool negative = !a.empty() && a.front() == '-';
    if (negative) a.remove_prefix(1);
    if (IsUnsignedInt(a) && IsUnsignedInt(b)) {
      s = std::string(negative ? "-" : "") + "\\frac{" + std::string(a) + "}{" +
          std::string(b) + "}";
    }
  }
  return s;
}

std::optional<double> ParseNumericAnswer(std::string_view answer) {
  return ParseNumberRec(NormalizeAnswer(answer), 0);
}

bool AnswersEquivalent(std::string_view prediction, std::string_view gold) {
  std::string p = NormalizeAnswer(prediction), g = NormalizeAnswer(gold);
  if (p.empty() || g.empty()) return p == g && !Trim(prediction).empty();
  return EquivalentNormalized(p, g, HasPercent(prediction), HasPercent(gold), 0);
}

std::string GoldAnswer(std::string_view field_value, GoldFormat format) {
  switch (format) {
    case GoldFormat::kPlain:
      return std::string(Trim(field_value));
    case GoldFormat::kGsm8k:
      return ExtractGsm8kAnswer(field_value).value_or("");
    case GoldFormat::kBoxed:
      return ExtractBoxed(field_value).value_or("");
  }
  return "";
}

}  // namespace canopy
