#include "coordinator/checkpoint.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>

#include "common/content_hash.h"
#include "transport/capnp_values.h"
#include "transport/checkpoint.capnp.h"

namespace canopy {
namespace {

static_assert(StrategyState::kVersion == ckpt::CHECKPOINT_VERSION,
              "strategy_state.h kVersion != checkpoint.capnp checkpointVersion");

constexpr char kMagic[8] = {'C', 'A', 'N', 'O', 'P', 'Y', 'C', 'K'};
constexpr size_t kHeaderBytes = 32;
constexpr uint64_t kMaxCheckpointBytes = uint64_t{4} << 30;

// HASH.ckpt: 16 lower-case hex digits and ".ckpt".
bool IsCheckpointName(std::string_view name) {
  return name.size() == 21 && name.ends_with(".ckpt") && name.find_first_not_of("0123456789abcdef") == 16;
}

using capnp_values::Enum;
using capnp_values::FillList;
using capnp_values::FillTexts;
using capnp_values::Str;
using capnp_values::Texts;
using capnp_values::Txt;
using capnp_values::Vec;

template <typename Builder>
void PutChild(Builder b, const StepOutcome& c) {
  b.setText(Txt(c.text));
  b.setTokens(c.tokens);
  b.setEnd(static_cast<ckpt::Finish>(c.end));
  b.setSumLogprob(c.sum_logprob);
  FillList(b.initStepScores(static_cast<unsigned>(c.step_scores.size())), c.step_scores);
  FillList(b.initTokenIds(static_cast<unsigned>(c.token_ids.size())), c.token_ids);
  FillTexts(b.initSteps(static_cast<unsigned>(c.steps.size())), c.steps);
  b.setWaits(c.waits);
  b.setCued(c.cued);
}

void PutNodes(capnp::List<ckpt::Node>::Builder out, const std::vector<SearchNode>& nodes) {
  for (size_t i = 0; i < nodes.size(); ++i) {
    const SearchNode& n = nodes[i];
    auto b = out[static_cast<unsigned>(i)];
    b.setParent(n.parent);
    b.setText(Txt(n.text));
    b.setTokens(n.tokens);
    b.setEnd(static_cast<ckpt::Finish>(n.end));
    b.setSumLogprob(n.sum_logprob);
    FillList(b.initStepScores(static_cast<unsigned>(n.step_scores.size())), n.step_scores);
    FillList(b.initTokenIds(static_cast<unsigned>(n.token_ids.size())), n.token_ids);
    if (!n.steps.empty()) FillTexts(b.initSteps(static_cast<unsigned>(n.steps.size())), n.steps);  // no pointer for none
    b.setTerminal(n.terminal);
    b.setTruncated(n.truncated);
    b.setPending(n.pending);
    b.setReleased(n.released);
    b.setNumExpansions(n.num_expansions);
    b.setVisits(n.visits);
    b.setValueSum(n.value_sum);
    b.setPrior(n.prior);
    b.setExpansion(n.expansion);
    b.setSample(n.sample);
    b.setWaits(n.waits);
    b.setCued(n.cued);
  }
}

StatusOr<std::vector<SearchNode>> GetNodes(capnp::List<ckpt::Node>::Reader in) {
  std::vector<SearchNode> nodes;
  nodes.reserve(in.size());
  for (auto r : in) {
    SearchNode n;
    n.parent = r.getParent();
    n.text = Str(r.getText());
    n.tokens = r.getTokens();
    CANOPY_ASSIGN_OR_RETURN(n.end, (Enum<FinishReason>(static_cast<uint16_t>(r.getEnd()), 3, "finish reason")));
    n.sum_logprob = r.getSumLogprob();
    n.step_scores = Vec<double>(r.getStepScores());
    n.token_ids = Vec<int32_t>(r.getTokenIds());
    n.steps = Texts(r.getSteps());
    n.terminal = r.getTerminal();
    n.truncated = r.getTruncated();
    n.pending = r.getPending();
    n.released = r.getReleased();
    n.num_expansions = r.getNumExpansions();
    n.visits = r.getVisits();
    n.value_sum = r.getValueSum();
    n.prior = r.getPrior();
    n.expansion = r.getExpansion();
    n.sample = r.getSample();
    n.waits = r.getWaits();
    n.cued = r.getCued();
    nodes.push_back(std::move(n));
  }
  return nodes;
}

template <typename Builder>
void PutExpansion(Builder b, const Expansion& e) {
  b.setId(e.id);
  b.setNode(e.node);
  b.setNumChildren(e.num_children);
  b.setMaxTokens(e.max_tokens);
  b.setFullSolution(e.full_solution);
  b.setSeed(e.seed);
  b.setFirstSample(e.first_sample);
}

void Build(const ProblemCheckpoint& c, ckpt::Checkpoint::Builder b) {
  const StrategyState& s = c.state;
  b.setVersion(StrategyState::kVersion);
  b.setProblemId(Txt(c.problem_id));
  b.setSecondsSpent(c.seconds_spent);
  b.setKind(Txt(s.kind));
  b.setOptionsDigest(s.options_digest);
  PutNodes(b.initNodes(static_cast<unsigned>(s.nodes.size())), s.nodes);
  b.setStop(static_cast<ckpt::Stop>(s.stop));
  b.setStarted(s.started);
  b.setNextId(s.next_id);
  b.setNextApply(s.next_apply);
  auto out = b.initOutstanding(static_cast<unsigned>(s.outstanding.size()));
  for (size_t i = 0; i < s.outstanding.size(); ++i) PutExpansion(out[static_cast<unsigned>(i)], s.outstanding[i]);
  auto buf = b.initBuffered(static_cast<unsigned>(s.buffered.size()));
  for (size_t i = 0; i < s.buffered.size(); ++i) {
    const ExpansionOutcome& o = s.buffered[i];
    auto ob = buf[static_cast<unsigned>(i)];
    ob.setExpansion(o.expansion);
    auto ch = ob.initChildren(static_cast<unsigned>(o.children.size()));
    for (size_t j = 0; j < o.children.size(); ++j) PutChild(ch[static_cast<unsigned>(j)], o.children[j]);
  }
  b.setTokensUsed(s.tokens_used);
  b.setTokensReserved(s.tokens_reserved);
  b.setExpansionsPlanned(s.expansions_planned);
  b.setRootPlanned(s.root_planned);
  b.setBeamRound(s.beam.round);
  b.setBeamRoundOutstanding(s.beam.round_outstanding);
  b.setBeamFinished(s.beam.finished);
  FillList(b.initBeamActive(static_cast<unsigned>(s.beam.active.size())), s.beam.active);
  FillList(b.initBeamNew(static_cast<unsigned>(s.beam.fresh.size())), s.beam.fresh);
  FillList(b.initBeamCompleted(static_cast<unsigned>(s.beam.completed.size())), s.beam.completed);
  auto sub = b.initDvtsSubtrees(static_cast<unsigned>(s.dvts.subtrees.size()));
  for (size_t i = 0; i < s.dvts.subtrees.size(); ++i) {
    sub[static_cast<unsigned>(i)].setCurrent(s.dvts.subtrees[i].current);
    sub[static_cast<unsigned>(i)].setDone(s.dvts.subtrees[i].done);
    sub[static_cast<unsigned>(i)].setPending(s.dvts.subtrees[i].pending);
  }
  auto of = b.initDvtsSubtreeOf(static_cast<unsigned>(s.dvts.subtree_of.size()));
  unsigned k = 0;
  for (const auto& [e, t] : s.dvts.subtree_of) {
    of[k].setExpansion(e);
    of[k].setSubtree(t);
    ++k;
  }
  FillList(b.initDvtsFinished(static_cast<unsigned>(s.dvts.finished.size())), s.dvts.finished);
  b.setSamplesPlanned(s.samples_planned);
  b.setSettled(s.settled);
}

StatusOr<ProblemCheckpoint> Read(ckpt::Checkpoint::Reader r) {
  if (r.getVersion() != StrategyState::kVersion) {
    return FailedPreconditionError("checkpoint version " + std::to_string(r.getVersion()) + ", this canopy reads " +
                                   std::to_string(StrategyState::kVersion));
  }
  ProblemCheckpoint c;
  c.problem_id = Str(r.getProblemId());
  c.seconds_spent = r.getSecondsSpent();
  StrategyState& s = c.state;
  s.kind = Str(r.getKind());
  s.options_digest = r.getOptionsDigest();
  CANOPY_ASSIGN_OR_RETURN(s.nodes, GetNodes(r.getNodes()));
  CANOPY_ASSIGN_OR_RETURN(s.stop, (Enum<StopReason>(static_cast<uint16_t>(r.getStop()), 8, "stop reason")));
  s.started = r.getStarted();
  s.next_id = r.getNextId();
  s.next_apply = r.getNextApply();
  for (auto e : r.getOutstanding()) {
    s.outstanding.push_back(
        {e.getId(), e.getNode(), e.getNumChildren(), e.getMaxTokens(), e.getFullSolution(), e.getSeed(), e.getFirstSample()});
  }
  for (auto o : r.getBuffered()) {
    ExpansionOutcome out;
    out.expansion = o.getExpansion();
    for (auto ch : o.getChildren()) {
      StepOutcome c;
      c.text = Str(ch.getText());
      c.tokens = ch.getTokens();
      CANOPY_ASSIGN_OR_RETURN(c.end, (Enum<FinishReason>(static_cast<uint16_t>(ch.getEnd()), 3, "finish reason")));
      c.sum_logprob = ch.getSumLogprob();
      c.step_scores = Vec<double>(ch.getStepScores());
      c.token_ids = Vec<int32_t>(ch.getTokenIds());
      c.steps = Texts(ch.getSteps());
      c.waits = ch.getWaits();
      c.cued = ch.getCued();
      out.children.push_back(std::move(c));
    }
    s.buffered.push_back(std::move(out));
  }
  s.tokens_used = r.getTokensUsed();
  s.tokens_reserved = r.getTokensReserved();
  s.expansions_planned = r.getExpansionsPlanned();
  s.root_planned = r.getRootPlanned();
  s.beam.round = r.getBeamRound();
  s.beam.round_outstanding = r.getBeamRoundOutstanding();
  s.beam.finished = r.getBeamFinished();
  s.beam.active = Vec<int32_t>(r.getBeamActive());
  s.beam.fresh = Vec<int32_t>(r.getBeamNew());
  s.beam.completed = Vec<int32_t>(r.getBeamCompleted());
  for (auto t : r.getDvtsSubtrees()) s.dvts.subtrees.push_back({t.getCurrent(), t.getDone(), t.getPending()});
  for (auto t : r.getDvtsSubtreeOf()) s.dvts.subtree_of[t.getExpansion()] = t.getSubtree();
  s.dvts.finished = Vec<int32_t>(r.getDvtsFinished());
  s.samples_planned = r.getSamplesPlanned();
  s.settled = r.getSettled();
  return c;
}

template <typename T>
void PutLe(std::string* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out->push_back(static_cast<char>((static_cast<uint64_t>(v) >> (8 * i)) & 0xff));
}
template <typename T>
T GetLe(std::string_view in, size_t at) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return static_cast<T>(v);
}

}  // namespace

std::string EncodeCheckpoint(const ProblemCheckpoint& c) {
  capnp::MallocMessageBuilder message;
  Build(c, message.initRoot<ckpt::Checkpoint>());
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  std::string_view payload(reinterpret_cast<const char*>(words.begin()), words.size() * sizeof(capnp::word));
  std::string out(kMagic, sizeof(kMagic));
  PutLe<uint32_t>(&out, StrategyState::kVersion);
  PutLe<uint32_t>(&out, 0);
  PutLe<uint64_t>(&out, payload.size());
  PutLe<uint64_t>(&out, StringHash(payload));
  out.append(payload);
  return out;
}

StatusOr<ProblemCheckpoint> DecodeCheckpoint(std::string_view bytes) {
  if (bytes.size() < kHeaderBytes) return DataLossError("truncated: " + std::to_string(bytes.size()) + " bytes, no header");
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) return DataLossError("not a canopy checkpoint (bad magic)");
  const auto version = GetLe<uint32_t>(bytes, 8);
  if (version != StrategyState::kVersion) {
    return FailedPreconditionError("checkpoint version " + std::to_string(version) + ", this canopy reads " +
                                   std::to_string(StrategyState::kVersion));
  }
  if (GetLe<uint32_t>(bytes, 12) != 0) return DataLossError("reserved header field is not zero (corrupt)");
  const auto size = GetLe<uint64_t>(bytes, 16);
  const uint64_t have = bytes.size() - kHeaderBytes;
  if (size != have) {
    return DataLossError("the header says " + std::to_string(size) + " payload bytes, the file has " +
                         std::to_string(have) + " (truncated or corrupt)");
  }
  std::string_view payload = bytes.substr(kHeaderBytes);
  if (StringHash(payload) != GetLe<uint64_t>(bytes, 24)) return DataLossError("checksum mismatch (corrupt)");
  if (payload.size() % sizeof(capnp::word) != 0) return DataLossError("payload is not whole words");
  // Cap'n Proto reads aligned words: copy out of the (unaligned) string.
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(payload.size() / sizeof(capnp::word));
  std::memcpy(words.begin(), payload.data(), payload.size());
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * words.size() + 1024;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    return Read(reader.getRoot<ckpt::Checkpoint>());
  } catch (const kj::Exception& e) {
    return DataLossError("checkpoint message: " + std::string(e.getDescription().cStr()));
  } catch (const std::exception& e) {
    return DataLossError(std::string("checkpoint message: ") + e.what());
  }
}

CheckpointStore::CheckpointStore(std::string dir, Env* env)
    : dir_(std::move(dir)), env_(env ? env : Env::Default()) {}

std::string CheckpointStore::PathOf(const std::string& problem_id) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%016llx.ckpt", static_cast<unsigned long long>(StringHash(problem_id)));
  return dir_ + "/" + name;
}

StatusOr<uint64_t> CheckpointStore::Write(const ProblemCheckpoint& c) {
  if (!dir_made_) {
    CANOPY_RETURN_IF_ERROR(env_->CreateDirs(dir_));
    dir_made_ = true;
  }
  std::string bytes = EncodeCheckpoint(c);
  CANOPY_RETURN_IF_ERROR(WriteFileAtomically(PathOf(c.problem_id), bytes, env_));
  return static_cast<uint64_t>(bytes.size());
}

Status CheckpointStore::Remove(const std::string& problem_id) {
  const std::string path = PathOf(problem_id);
  CANOPY_ASSIGN_OR_RETURN(FileKind kind, env_->GetFileKind(path));
  if (kind != FileKind::kRegular) return Status::Ok();
  CANOPY_RETURN_IF_ERROR(env_->RemoveFile(path));
  return env_->SyncDir(dir_);
}

std::vector<std::string> CheckpointStore::RemoveInterruptedWrites() {
  return RemoveInterruptedAtomicWrites(dir_, IsCheckpointName, env_);
}

std::map<std::string, ProblemCheckpoint> CheckpointStore::Load(std::vector<std::string>* refused) const {
  std::map<std::string, ProblemCheckpoint> out;
  std::error_code ec;
  std::vector<std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    // Ours: 16 hex digits and ".ckpt" (temporary files and anything else are not).
    if (!IsCheckpointName(name) || !entry.is_regular_file(ec)) continue;
    files.push_back(entry.path().string());
  }
  std::sort(files.begin(), files.end());
  for (const std::string& path : files) {
    StatusOr<std::string> bytes = env_->ReadFileToString(path, kMaxCheckpointBytes);
    StatusOr<ProblemCheckpoint> c = bytes.ok() ? DecodeCheckpoint(*bytes) : StatusOr<ProblemCheckpoint>(bytes.status());
    if (c.ok() && PathOf(c->problem_id) != path) {
      c = DataLossError("holds problem '" + c->problem_id + "', whose checkpoint has another name");
    }
    if (!c.ok()) {
      if (refused) refused->push_back(path + ": " + c.status().message());
      continue;
    }
    out[c->problem_id] = std::move(c).value();
  }
  return out;
}

}  // namespace canopy
