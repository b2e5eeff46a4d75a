// Internal to the scorers (worker/scorer*.cc): the factories of the kinds with their own
// file, and helpers they share. Not for other modules.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/model/tokenizer.h"
#include "worker/scoring/scorer.h"

namespace canopy::scorer_internal {

// `s` without leading and trailing whitespace (space, tab, CR, LF).
std::string Strip(std::string_view s);

// The one id `text` encodes to (special tokens parsed); InvalidArgument naming `what`,
// the string, its ids and `model` when it is not exactly one token.
StatusOr<int32_t> SingleToken(const Tokenizer& tok, const std::string& text,
                              const std::string& what, const std::string& model);

// InvalidArgument for a query without steps.
Status CheckQueries(const std::string& kind, const std::vector<ScoreQuery>& queries);

// P(a) / (P(a) + P(b)) from two logits, computed stably.
double PairProbability(double logit_a, double logit_b);

StatusOr<std::unique_ptr<Scorer>> MakePrmTokenScorer(const ScorerOptions& options);
StatusOr<std::unique_ptr<Scorer>> MakePrmHeadScorer(const ScorerOptions& options);
StatusOr<std::unique_ptr<Scorer>> MakeVerifierScorer(const ScorerOptions& options);
StatusOr<std::unique_ptr<Scorer>> MakePolicyHeadScorer(const ScorerOptions& options, Engine* policy);
StatusOr<std::unique_ptr<Scorer>> MakeValueHeadScorer(const ScorerOptions& options);

}  // namespace canopy::scorer_internal
