// The requests an Engine serves and what they return, as values: an expansion grows k
// children from a node, each until a stop condition; its result lists the children.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/finish_reason.h"
#include "worker/engine/sampler.h"

namespace canopy {

using NodeId = int64_t;

struct StopCondition {
  std::vector<std::string> stop_strings = {"\n\n"};
  int32_t max_tokens = 256;  // per child
  bool stop_at_end_of_turn = true;
};

// Budget forcing (s1: Muennighoff et al. 2025), per child, counted in the child's own
// tokens: an end of turn drawn before `min_tokens` is replaced by the `wait` tokens and the
// child goes on; after `answer_at` tokens (> 0) the next draw is replaced by the `cue` tokens
// (the thinking is cut) and the child goes on to its answer. Forced tokens enter the
// sequence as if drawn, with log-probability 0. Empty token lists turn each off.
struct BudgetForcing {
  int32_t min_tokens = 0;
  std::vector<int32_t> wait;
  int32_t answer_at = 0;
  std::vector<int32_t> cue;
};

struct ExpandRequest {
  NodeId node = -1;
  int32_t num_children = 1;
  SamplingParams sampling;
  StopCondition stop;
  uint64_t seed = 0;  // the caller derives it from (job seed, problem, node)
  // Child i is sample first_sample + i: its draws are those of that sample index, so one
  // expansion split into parts (on several workers) gives the same children as a whole one.
  int32_t first_sample = 0;
  // Also return each child's final-normed hidden state after its last token
  // (ExpandedChild::hidden). That token is computed in a batch step that runs anyway, as
  // one more one-token item; the request finishes a step later than without.
  bool want_hidden = false;
  BudgetForcing forcing;
};

struct ExpandedChild {
  NodeId node = -1;                 // a new node: parent's tokens + `tokens`
  std::vector<int32_t> tokens;      // the generated tokens, the stopping one included
  std::string text;                 // their text (end-of-turn tokens not rendered)
  std::vector<float> logprobs;      // per token
  double sum_logprob = 0.0;
  FinishReason finish = FinishReason::kLength;
  std::vector<float> hidden;        // with ExpandRequest::want_hidden: hidden_size floats
  int32_t waits = 0;                // budget forcing: ends replaced by `wait`
  bool cued = false;                // budget forcing: the answer cue was appended
};

struct ExpandResult {
  uint64_t request_id = 0;
  NodeId parent = -1;
  std::vector<ExpandedChild> children;  // in sample-index order
};

}  // namespace canopy
