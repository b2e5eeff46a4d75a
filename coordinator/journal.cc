#include "coordinator/journal.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string_view>

namespace canopy {

StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& dir, const std::string& launcher,
                                                 const std::set<std::string>& finished, Env* env) {
  auto j = std::unique_ptr<Journal>(new Journal());
  const std::string path = dir + "/journal.jsonl";
  std::set<std::string> started;
  std::vector<std::string> order;
  std::string contents;
  if (auto read = env->ReadFileToString(path); read.ok()) {
    contents = std::move(read).value();
  } else if (read.status().code() != StatusCode::kNotFound) {
    return read.status();
  }
  // Only complete lines count; what follows the last newline is a write cut short.
  const size_t whole = contents.rfind('\n') == std::string::npos ? 0 : contents.rfind('\n') + 1;
  for (size_t pos = 0; pos < whole;) {
    const size_t end = contents.find('\n', pos);
    const std::string_view line(contents.data() + pos, end - pos);
    pos = end + 1;
    nlohmann::json e = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (e.is_discarded() || !e.is_object()) continue;
    std::string event = e.value("event", "");
    if (event == "session") j->session_ = std::max(j->session_, e.value("session", 0) + 1);
    if (event == "start") {
      std::string id = e.value("id", "");
      if (started.insert(id).second) order.push_back(id);
    }
  }
  for (const std::string& id : order) {
    if (!finished.count(id)) j->interrupted_.push_back(id);
  }
  CANOPY_ASSIGN_OR_RETURN(j->file_, env->NewAppendableFile(path));
  // A torn last line would glue this session's line onto its garbage: cut it first.
  if (whole < contents.size()) {
    CANOPY_RETURN_IF_ERROR(j->file_->Truncate(whole).WithContext("cutting the torn last line"));
  }
  nlohmann::json s = {{"event", "session"},
                      {"session", j->session_},
                      {"pid", static_cast<int64_t>(getpid())},
                      {"launcher", launcher},
                      {"unix_time", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()},
                      {"interrupted", j->interrupted_}};
  CANOPY_RETURN_IF_ERROR(j->Append(s.dump()));
  return j;
}

Journal::~Journal() = default;

Status Journal::Started(const std::string& id) {
  nlohmann::json e = {{"event", "start"}, {"id", id}, {"session", session_}};
  return Append(e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Status Journal::Checkpointed(const std::string& reason, int64_t problems, uint64_t bytes, double milliseconds) {
  nlohmann::json e = {{"event", "checkpoint"}, {"reason", reason}, {"problems", problems},
                      {"bytes", bytes},        {"ms", milliseconds}, {"session", session_}};
  return Append(e.dump());
}

Status Journal::Restored(const std::string& id, int64_t expansions, int64_t tokens) {
  nlohmann::json e = {{"event", "restored"}, {"id", id}, {"expansions", expansions}, {"tokens", tokens}, {"session", session_}};
  return Append(e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Status Journal::Note(const std::string& how, int64_t abandoned) {
  nlohmann::json e = {{"event", how}, {"session", session_}, {"abandoned", abandoned}};
  return Append(e.dump());
}

Status Journal::Append(const std::string& line) {
  CANOPY_ASSIGN_OR_RETURN(const uint64_t size, file_->Size());
  Status s = file_->Append(line + "\n");
  if (!s.ok()) {
    // Cut back any prefix that made it, so the next line does not follow half of this one.
    if (Status t = file_->Truncate(size); !t.ok()) {
      s = Status(s.code(), s.message() + "; then cutting back to " + std::to_string(size) +
                               " bytes failed too (" + t.message() + ")");
    }
    return s;
  }
  // The journal is a hint (results.jsonl is the record), so no fsync per line.
  return Status::Ok();
}

}  // namespace canopy
