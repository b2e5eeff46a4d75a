#include "worker/service/local_worker.h"

#include <algorithm>
#include <optional>

#include "common/logging.h"
#include "worker/model/chat_template.h"

namespace canopy {

namespace {

// A step of a generated text: its stripped text and where that starts in the text.
struct StepSpan {
  std::string text;
  size_t begin = 0;
};

std::vector<StepSpan> SplitStepSpans(const std::string& text) {
  std::vector<StepSpan> steps;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find("\n\n", pos);
    std::string piece = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    size_t a = piece.find_first_not_of(" \t\r\n");
    if (a != std::string::npos) {
      size_t b = piece.find_last_not_of(" \t\r\n");
      steps.push_back({piece.substr(a, b - a + 1), pos + a});
    }
    if (end == std::string::npos) break;
    pos = end + 2;
  }
  return steps;
}

// Where each of a child's tokens lies in its text, and which step owns it. The engine
// renders a child's text as the bytes of its tokens, end-of-turn tokens as nothing; a token
// belongs to the step its last byte lies in (so a step owns the blank line after it, as a
// step-mode child owns the "\n\n" that stopped it). nullopt when there are no steps or the
// text is not the tokens' bytes.
struct TokenPlace {
  size_t start = 0, len = 0, step = 0;
};

std::optional<std::vector<TokenPlace>> PlaceTokens(const Tokenizer& tok, const ExpandedChild& c,
                                                   const std::vector<StepSpan>& steps) {
  if (steps.empty()) return std::nullopt;
  const std::vector<int32_t> eot = tok.EndOfTurnIds();
  std::vector<TokenPlace> places(c.tokens.size());
  size_t offset = 0;
  for (size_t i = 0; i < c.tokens.size(); ++i) {
    const bool is_eot = std::find(eot.begin(), eot.end(), c.tokens[i]) != eot.end();
    TokenPlace& p = places[i];
    p.start = offset;
    p.len = is_eot ? 0 : tok.TokenBytes(c.tokens[i]).size();
    offset += p.len;
    const size_t last = p.len > 0 ? p.start + p.len - 1 : p.start;
    while (p.step + 1 < steps.size() && steps[p.step + 1].begin <= last) ++p.step;
  }
  if (offset != c.text.size()) return std::nullopt;
  return places;
}

// The logprobs of each step's tokens (PlaceTokens). A step that ends up with no token of
// its own (one token spanning two steps) gets the token its first byte lies in.
std::vector<std::vector<float>> StepLogprobs(const Tokenizer& tok, const ExpandedChild& c,
                                             const std::vector<StepSpan>& steps) {
  std::vector<std::vector<float>> out(steps.size());
  if (steps.empty()) return out;
  std::optional<std::vector<TokenPlace>> places = PlaceTokens(tok, c, steps);
  if (!places || c.logprobs.size() != c.tokens.size()) {
    for (auto& lp : out) lp = c.logprobs;  // cannot map tokens to text: the whole child
    return out;
  }
  for (size_t i = 0; i < c.tokens.size(); ++i) out[(*places)[i].step].push_back(c.logprobs[i]);
  for (size_t k = 0; k < steps.size(); ++k) {
    if (!out[k].empty()) continue;
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const TokenPlace& p = (*places)[i];
      if (p.start <= steps[k].begin && steps[k].begin < p.start + p.len) {
        out[k].push_back(c.logprobs[i]);
        break;
      }
    }
  }
  return out;
}

// How many of the child's tokens lie up to and including each step's last token
// (PlaceTokens); nullopt when the text cannot be mapped to the tokens.
std::optional<std::vector<size_t>> StepEndTokens(const Tokenizer& tok, const ExpandedChild& c,
                                                 const std::vector<StepSpan>& steps) {
  std::optional<std::vector<TokenPlace>> places = PlaceTokens(tok, c, steps);
  if (!places) return std::nullopt;
  std::vector<size_t> end(steps.size(), 0);
  for (size_t i = 0; i < places->size(); ++i) end[(*places)[i].step] = i + 1;
  for (size_t k = 1; k < end.size(); ++k) end[k] = std::max(end[k], end[k - 1]);
  return end;
}

// Query `query`'s policy hidden state (step k of num_steps of child c): taken from the
// expansion, or its token sequence queued in `missing` to be computed.
void PolicyHiddenFor(const Engine& engine, const ExpandedChild& c, const std::vector<StepSpan>& spans,
                     size_t k, size_t num_steps, size_t query, ScoreQuery* q,
                     std::vector<std::vector<int32_t>>* missing, std::vector<size_t>* missing_of) {
  // The last step ends with the child: the engine returned its state. An earlier step of a
  // whole solution ends inside it: its prefix is scored through the engine (the prefix
  // cache holds it, so only the tail of a block is computed).
  size_t end = c.tokens.size();
  if (k + 1 < num_steps) {
    std::optional<std::vector<size_t>> ends = StepEndTokens(engine.tokenizer(), c, spans);
    if (ends && (*ends)[k] > 0) end = (*ends)[k];
  }
  if (end == c.tokens.size() && !c.hidden.empty()) {
    q->policy_hidden = c.hidden;
    return;
  }
  const std::vector<int32_t>& all = engine.NodeTokens(c.node);
  missing->emplace_back(all.begin(), all.end() - static_cast<std::ptrdiff_t>(c.tokens.size() - end));
  missing_of->push_back(query);
}

}  // namespace

std::vector<std::string> SplitSteps(const std::string& text) {
  std::vector<std::string> steps;
  for (StepSpan& s : SplitStepSpans(text)) steps.push_back(std::move(s.text));
  return steps;
}

LocalWorker::LocalWorker(Engine* engine, Scorer* scorer) : engine_(engine), fixed_scorer_(scorer) {}

LocalWorker::LocalWorker(Engine* engine, ScorerProvider scorers)
    : engine_(engine), scorers_(std::move(scorers)) {}

Status LocalWorker::CreateRoot(const RootSpec& root) {
  if (nodes_.count(root.key)) return InvalidArgumentError("worker: root key already exists");
  std::vector<int32_t> ids = RenderPromptTokens(*engine_, root.system_prompt, root.user_message);
  const int64_t vocab = engine_->config().vocab_size;
  for (int32_t t : root.path_tokens) {
    if (t < 0 || t >= vocab) {
      return InvalidArgumentError("worker: node path token " + std::to_string(t) +
                                  " is outside the vocabulary (" + std::to_string(vocab) + ")");
    }
  }
  ids.insert(ids.end(), root.path_tokens.begin(), root.path_tokens.end());
  if (static_cast<int64_t>(ids.size()) >= engine_->config().max_position) {
    return InvalidArgumentError("worker: the prompt has " + std::to_string(ids.size()) +
                                " tokens, the model's context is " +
                                std::to_string(engine_->config().max_position));
  }
  NodeInfo info;
  if (fixed_scorer_) {
    info.scorer = fixed_scorer_;
  } else if (!root.scorer.empty() && root.scorer != "none") {
    if (!scorers_) return FailedPreconditionError("worker: no scorers configured (asked for " + root.scorer + ")");
    CANOPY_ASSIGN_OR_RETURN(info.scorer, scorers_(root.scorer));
  }
  info.engine_node = engine_->CreateRoot(std::move(ids));
  info.question = root.question;
  info.steps = root.path_steps;
  nodes_[root.key] = std::move(info);
  return Status::Ok();
}

const std::vector<int32_t>& LocalWorker::TokensOf(const std::string& text) {
  auto it = forcing_tokens_.find(text);
  if (it == forcing_tokens_.end()) it = forcing_tokens_.emplace(text, engine_->tokenizer().Encode(text, false)).first;
  return it->second;
}

Status LocalWorker::Expand(const ExpandCall& call) {
  auto it = nodes_.find(call.node);
  if (it == nodes_.end()) {
    return NotFoundError("worker: expand of unknown node (" + std::to_string(call.node.call) + ", " +
                         std::to_string(call.node.sample) + ")");
  }
  ExpandRequest req;
  req.node = it->second.engine_node;
  req.num_children = call.num_children;
  req.sampling.temperature = call.temperature;
  req.sampling.top_p = call.top_p;
  req.sampling.top_k = call.top_k;
  req.stop.max_tokens = call.max_tokens;
  req.stop.stop_at_end_of_turn = true;
  if (call.full_solution) req.stop.stop_strings.clear();
  req.seed = call.seed;
  req.first_sample = call.first_sample;
  // A scorer on the policy's hidden states: each child's state after its last token comes
  // with the expansion.
  req.want_hidden = it->second.scorer != nullptr && it->second.scorer->wants_policy_hidden();
  req.forcing.min_tokens = call.min_tokens;
  req.forcing.answer_at = call.answer_at;
  if (call.min_tokens > 0) req.forcing.wait = TokensOf(call.wait_text);
  if (call.answer_at > 0) req.forcing.cue = TokensOf(call.answer_cue);
  CANOPY_ASSIGN_OR_RETURN(uint64_t rid, engine_->Submit(req));
  inflight_[rid] = call;
  return Status::Ok();
}

void LocalWorker::Release(const NodeKey& key) {
  auto it = nodes_.find(key);
  if (it == nodes_.end()) return;
  if (Expanding(key)) {
    // Its expansion still needs the node (pinned in the engine, and its path for scoring):
    // released when the reply is converted.
    release_after_reply_.insert(key);
    return;
  }
  Status s = engine_->Release(it->second.engine_node);
  if (!s.ok()) CANOPY_LOG(Warn) << "worker: release: " << s.ToString();
  nodes_.erase(it);
}

void LocalWorker::Cancel(const std::vector<uint64_t>& calls) {
  const std::set<uint64_t> wanted(calls.begin(), calls.end());
  std::vector<NodeKey> parents;
  for (auto it = inflight_.begin(); it != inflight_.end();) {
    if (!wanted.count(it->second.call)) {
      ++it;
      continue;
    }
    CANOPY_CHECK(engine_->Cancel(it->first)) << "expansion " << it->first << " of call " << it->second.call;
    parents.push_back(it->second.node);
    ++expansions_cancelled_;
    it = inflight_.erase(it);
  }
  // A release that waited for the expansion's reply happens now.
  for (const NodeKey& key : parents) {
    if (release_after_reply_.count(key) && !Expanding(key)) {
      release_after_reply_.erase(key);
      Release(key);
    }
  }
}

std::vector<ExpandReply> LocalWorker::Poll(Deadline deadline) {
  std::vector<ExpandReply> out;
  while (out.empty() && !inflight_.empty()) {
    out = PollOnce();
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  return out;
}

std::vector<ExpandReply> LocalWorker::PollOnce() {
  std::vector<ExpandReply> out;
  if (inflight_.empty()) return out;
  for (const ExpandResult& r : engine_->Step()) out.push_back(Convert(r));
  return out;
}

const std::vector<int32_t>* LocalWorker::NodeTokens(const NodeKey& key) const {
  auto it = nodes_.find(key);
  if (it == nodes_.end() || !engine_->HasNode(it->second.engine_node)) return nullptr;
  return &engine_->NodeTokens(it->second.engine_node);
}

bool LocalWorker::Expanding(const NodeKey& key) const {
  for (const auto& [rid, call] : inflight_) {
    if (call.node == key) return true;
  }
  return false;
}

void LocalWorker::Reset() {
  while (!inflight_.empty()) PollOnce();
  for (const auto& [key, info] : nodes_) {
    Status s = engine_->Release(info.engine_node);
    if (!s.ok()) CANOPY_LOG(Warn) << "worker: reset: " << s.ToString();
  }
  nodes_.clear();
  release_after_reply_.clear();
}

ExpandReply LocalWorker::Convert(const ExpandResult& result) {
  ExpandCall call = inflight_.at(result.request_id);
  inflight_.erase(result.request_id);
  const NodeInfo& parent = nodes_.at(call.node);
  Scorer* scorer = parent.scorer;
  ++expansions_done_;
  ExpandReply reply;
  reply.call = call.call;
  reply.first_sample = call.first_sample;
  StepQueries sq;
  std::vector<ScoreQuery>& queries = sq.queries;
  for (size_t i = 0; i < result.children.size(); ++i) {
    const ExpandedChild& c = result.children[i];
    ChildReply child;
    child.text = c.text;
    child.tokens = static_cast<int32_t>(c.tokens.size());
    child.finish = c.finish;
    child.sum_logprob = c.sum_logprob;
    child.token_ids = c.tokens;
    child.waits = c.waits;
    child.cued = c.cued;
    tokens_generated_ += static_cast<int64_t>(c.tokens.size());
    NodeInfo info;
    info.engine_node = c.node;
    info.question = parent.question;
    info.steps = parent.steps;
    info.scorer = scorer;
    std::vector<StepSpan> spans = SplitStepSpans(c.text);
    std::vector<std::string> new_steps;
    std::vector<std::vector<float>> step_logprobs;
    if (!call.full_solution) {  // one step, even when it has no text; all its tokens
      std::string step = spans.empty() ? std::string() : spans[0].text;
      for (size_t k = 1; k < spans.size(); ++k) step += "\n\n" + spans[k].text;
      new_steps = {step};
      step_logprobs = {c.logprobs};
    } else {
      for (const StepSpan& span : spans) new_steps.push_back(span.text);
      step_logprobs = spans.size() == 1 ? std::vector<std::vector<float>>{c.logprobs}
                                        : StepLogprobs(engine_->tokenizer(), c, spans);
    }
    child.steps = new_steps;
    reply.children.push_back(std::move(child));
    for (size_t k = 0; k < new_steps.size(); ++k) {
      info.steps.push_back(new_steps[k]);
      if (scorer) {
        ScoreQuery q;
        q.question = parent.question;
        q.steps = info.steps;
        q.step_logprobs = step_logprobs[k];
        q.terminal = k + 1 == new_steps.size() && (call.full_solution || c.finish != FinishReason::kStop);
        queries.push_back(std::move(q));
        sq.owner.push_back(i);
        if (scorer->wants_policy_hidden()) {
          PolicyHiddenFor(*engine_, c, spans, k, new_steps.size(), queries.size() - 1, &queries.back(),
                          &sq.missing, &sq.missing_of);
        }
      }
    }
    nodes_[NodeKey{call.call, call.first_sample + static_cast<int32_t>(i)}] = std::move(info);
  }
  if (release_after_reply_.count(call.node)) {
    if (!Expanding(call.node)) {  // no other expansion of the node still in flight
      release_after_reply_.erase(call.node);
      Release(call.node);
    }
  }
  if (scorer && !queries.empty()) ScoreSteps(scorer, &sq, &reply);
  return reply;
}

void LocalWorker::ScoreSteps(Scorer* scorer, StepQueries* sq, ExpandReply* reply) {
  if (!sq->missing.empty()) {
    StatusOr<std::vector<std::vector<float>>> h = engine_->LastHidden(sq->missing);
    if (!h.ok()) {
      reply->error = "scorer " + scorer->name() + ": " + h.status().ToString();
      return;
    }
    for (size_t m = 0; m < sq->missing.size(); ++m) {
      sq->queries[sq->missing_of[m]].policy_hidden = std::move((*h)[m]);
    }
  }
  StatusOr<std::vector<double>> scores = scorer->Score(sq->queries);
  if (!scores.ok()) {
    reply->error = "scorer " + scorer->name() + ": " + scores.status().ToString();
    return;
  }
  for (size_t q = 0; q < sq->owner.size(); ++q) {
    reply->children[sq->owner[q]].step_scores.push_back((*scores)[q]);
  }
}

}  // namespace canopy
