// Step scorers: how good is the newest step of a reasoning path? One interface, several
// kinds (see MakeScorer). A score is a probability-like number in [0, 1], higher is better;
// search/ aggregates the step scores of a path (last, min, prod, mean).
//
//   policy-logprob  exp(mean token logprob of the step) under the policy; no extra model
//   prm-token       P("good" token) at a step tag after the step (Math-Shepherd / RLHFlow);
//                   the good/bad/tag token ids are read from the PRM's tokenizer
//   prm-head        a classification head at a step separator (Qwen2.5-Math-PRM style):
//                   softmax(score.2(relu(score.0(h))))[1] at the separator's hidden state;
//                   the PRM is an HF directory (Qwen2ForProcessRewardModel), loaded without
//                   an LM head (its checkpoint has none)
//   policy-head     a learned value head (worker/scoring/value_head.h, `canopy train-prm`) on
//                   the policy's own hidden state after the step's last token, which the
//                   worker gets from the expansion (ScoreQuery::policy_hidden): no model,
//                   no KV pool and no forward pass of its own
//   judge           the policy itself asked whether the step is correct: P(Yes)/(P(Yes)+P(No))
//   verifier        an external program, started once, one JSON line in and one out per step
//
// A scorer with its own model keeps its own Engine (own KV pool): each query's token
// sequence extends the previous step's, so the prefix cache makes scoring incremental.
//
// Thread-safety: none; the worker's one thread drives its scorer with its engine.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace canopy {

class Engine;
class Tokenizer;

// One step to score: the path so far is question, steps[0..n-2]; steps[n-1] is the new one.
struct ScoreQuery {
  std::string question;              // the problem as the user wrote it (no chat template)
  std::vector<std::string> steps;    // step texts, in order, the newest last; non-empty
  std::vector<float> step_logprobs;  // policy logprobs of the newest step's tokens
  bool terminal = false;             // the newest step ends the solution
  // The policy's final-normed hidden state after the newest step's last token, when the
  // scorer wants it (Scorer::wants_policy_hidden); empty otherwise.
  std::vector<float> policy_hidden;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual const std::string& name() const = 0;
  // One score in [0, 1] per query, in query order. Queries are independent; an
  // implementation batches them through its engine.
  virtual StatusOr<std::vector<double>> Score(const std::vector<ScoreQuery>& queries) = 0;
  // True when Score reads ScoreQuery::policy_hidden: the worker then asks the engine for
  // the hidden state of each step's last token as the step is decoded.
  virtual bool wants_policy_hidden() const { return false; }
};

struct ScorerOptions {
  std::string kind = "policy-logprob";   // policy-logprob | prm-token | prm-head | policy-head | value-head | judge | verifier
  std::string model_path;                // prm-token, prm-head: the PRM (GGUF or HF directory);
                                         // policy-head, value-head: the value head's safetensors file
  std::string base_model_path;           // value-head: the head's base model ("" = the default model)
  int64_t kv_cache_bytes = 256ll << 20;  // the PRM engine's own pool
  // prm-token: the tag appended after each step and the good/bad tokens whose probabilities
  // are compared there (Math-Shepherd: tag "ки", good "+", bad "-").
  std::string step_tag = "\u043a\u0438";
  std::string good_token = "+";
  std::string bad_token = "-";
  // prm-head: the separator appended after each step (Qwen2.5-Math-PRM: "<extra_0>").
  std::string step_separator = "<extra_0>";
  std::string verifier_command;     // verifier: run with /bin/sh -c
  double verifier_timeout_s = 120;  // verifier: longest wait for one reply line
};

// `policy` is the worker's policy engine (used by policy-logprob and judge; must outlive the
// scorer). Errors name what is wrong: an unknown kind, a PRM file that does not load, a
// token that is not one token in the PRM's vocabulary, a verifier that cannot start.
StatusOr<std::unique_ptr<Scorer>> MakeScorer(const ScorerOptions& options, Engine* policy);

// ---- The exact model inputs (exposed for tests and tools) ----
//
// Step texts are stripped of leading and trailing whitespace (a policy's steps end with the
// "\n\n" that stopped them) before they are formatted.
//
// prm-token (Math-Shepherd): [bos if the tokenizer has one]
//   Encode(question + " " + step1 + " ") [tag] Encode("\n" + step2 + " ") [tag] ...
// i.e. the text `question step1 ки\nstep2 ки`, encoded piece by piece so that each
// query's tokens extend the previous step's exactly; the score is read after the last tag.
std::vector<int32_t> PrmTokenInput(const Tokenizer& tok, const ScoreQuery& q, int32_t tag_id);
// prm-head (Qwen2.5-Math-PRM): the ChatML conversation
//   <|im_start|>system\n{kQwenPrmSystemPrompt}<|im_end|>\n<|im_start|>user\n{question}
//   <|im_end|>\n<|im_start|>assistant\n{step1}<extra_0>{step2}<extra_0>...
// (what apply_chat_template gives for the model card's messages, cut after the newest
// separator; later tokens cannot change it). The score is read at the last separator.
inline constexpr const char* kQwenPrmSystemPrompt =
    "Please reason step by step, and put your final answer within \\boxed{}.";
std::vector<int32_t> PrmHeadInput(const Tokenizer& tok, const ScoreQuery& q, int32_t separator_id);
// judge: the user message put to the policy (in its chat template, with the generation
// prompt); P(Yes)/(P(Yes)+P(No)) is read from the logits that start the reply:
//   "Problem:\n{question}\n\nSolution so far:\n{step1}\n\n{step2}...\n\n"
//   "Is the last step correct? Answer Yes or No."
std::string JudgeMessage(const ScoreQuery& q);
// verifier: the request line (no newline), {"question":...,"steps":[...],"terminal":bool};
// steps as given, not stripped.
std::string VerifierRequest(const ScoreQuery& q);

}  // namespace canopy
