#include "worker/local_worker.h"

#include "common/logging.h"
#include "worker/chat_template.h"

namespace canopy {

std::vector<std::string> SplitSteps(const std::string& text) {
  std::vector<std::string> steps;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find("\n\n", pos);
    std::string piece = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    size_t a = piece.find_first_not_of(" \t\r\n");
    if (a != std::string::npos) {
      size_t b = piece.find_last_not_of(" \t\r\n");
      steps.push_back(piece.substr(a, b - a + 1));
    }
    if (end == std::string::npos) break;
    pos = end + 2;
  }
  return steps;
}

LocalWorker::LocalWorker(Engine* engine, Scorer* scorer) : engine_(engine), scorer_(scorer) {}

Status LocalWorker::CreateRoot(const RootSpec& root) {
  if (nodes_.count(root.key)) return InvalidArgumentError("worker: root key already exists");
  std::vector<ChatMessage> messages;
  if (!root.system_prompt.empty()) messages.push_back({"system", root.system_prompt});
  messages.push_back({"user", root.user_message});
  ChatTemplateKind kind = engine_->chat_template();
  std::string text = RenderChat(kind, messages, /*add_generation_prompt=*/true,
                                root.system_prompt.empty() ? engine_->default_system_prompt() : "");
  std::vector<int32_t> ids = engine_->tokenizer().Encode(text, kind != ChatTemplateKind::kRaw);
  if (static_cast<int64_t>(ids.size()) >= engine_->config().max_position) {
    return InvalidArgumentError("worker: the prompt has " + std::to_string(ids.size()) +
                                " tokens, the model's context is " +
                                std::to_string(engine_->config().max_position));
  }
  NodeInfo info;
  info.engine_node = engine_->CreateRoot(std::move(ids));
  info.question = root.question;
  nodes_[root.key] = std::move(info);
  return Status::Ok();
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
  CANOPY_ASSIGN_OR_RETURN(uint64_t rid, engine_->Submit(req));
  inflight_[rid] = call;
  return Status::Ok();
}

void LocalWorker::Release(const NodeKey& key) {
  auto it = nodes_.find(key);
  if (it == nodes_.end()) return;
  Status s = engine_->Release(it->second.engine_node);
  if (!s.ok()) CANOPY_LOG(Warn) << "worker: release: " << s.ToString();
  nodes_.erase(it);
}

std::vector<ExpandReply> LocalWorker::Poll() {
  std::vector<ExpandReply> out;
  while (out.empty() && !inflight_.empty()) {
    for (const ExpandResult& r : engine_->Step()) out.push_back(Convert(r));
  }
  return out;
}

ExpandReply LocalWorker::Convert(const ExpandResult& result) {
  ExpandCall call = inflight_.at(result.request_id);
  inflight_.erase(result.request_id);
  const NodeInfo& parent = nodes_.at(call.node);
  ExpandReply reply;
  reply.call = call.call;
  std::vector<ScoreQuery> queries;
  std::vector<size_t> owner;  // query -> child
  for (size_t i = 0; i < result.children.size(); ++i) {
    const ExpandedChild& c = result.children[i];
    ChildReply child;
    child.text = c.text;
    child.tokens = static_cast<int32_t>(c.tokens.size());
    child.finish = c.finish == FinishReason::kEndOfTurn ? ChildFinish::kEndOfTurn
                   : c.finish == FinishReason::kLength  ? ChildFinish::kLength
                                                        : ChildFinish::kStop;
    child.sum_logprob = c.sum_logprob;
    reply.children.push_back(std::move(child));
    NodeInfo info;
    info.engine_node = c.node;
    info.question = parent.question;
    info.steps = parent.steps;
    std::vector<std::string> new_steps = SplitSteps(c.text);
    if (!call.full_solution) {  // one step, even when it has no text
      std::string step = new_steps.empty() ? std::string() : new_steps[0];
      for (size_t k = 1; k < new_steps.size(); ++k) step += "\n\n" + new_steps[k];
      new_steps = {step};
    }
    for (size_t k = 0; k < new_steps.size(); ++k) {
      info.steps.push_back(new_steps[k]);
      if (scorer_) {
        ScoreQuery q;
        q.question = parent.question;
        q.steps = info.steps;
        if (new_steps.size() == 1) q.step_logprobs = c.logprobs;
        q.terminal = k + 1 == new_steps.size() && (call.full_solution || c.finish != FinishReason::kStop);
        queries.push_back(std::move(q));
        owner.push_back(i);
      }
    }
    nodes_[NodeKey{call.call, static_cast<int32_t>(i)}] = std::move(info);
  }
  if (scorer_ && !queries.empty()) {
    StatusOr<std::vector<double>> scores = scorer_->Score(queries);
    if (!scores.ok()) {
      reply.error = "scorer " + scorer_->name() + ": " + scores.status().ToString();
    } else {
      for (size_t q = 0; q < owner.size(); ++q) reply.children[owner[q]].step_scores.push_back((*scores)[q]);
    }
  }
  return reply;
}

}  // namespace canopy
