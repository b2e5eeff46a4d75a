#include "coordinator/journal.h"

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

namespace canopy {

StatusOr<std::unique_ptr<Journal>> Journal::Open(const std::string& dir, const std::string& launcher,
                                                 const std::set<std::string>& finished) {
  auto j = std::unique_ptr<Journal>(new Journal());
  const std::string path = dir + "/journal.jsonl";
  std::set<std::string> started;
  std::vector<std::string> order;
  {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      nlohmann::json e = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (e.is_discarded() || !e.is_object()) continue;  // a torn last line
      std::string event = e.value("event", "");
      if (event == "session") j->session_ = std::max(j->session_, e.value("session", 0) + 1);
      if (event == "start") {
        std::string id = e.value("id", "");
        if (started.insert(id).second) order.push_back(id);
      }
    }
  }
  for (const std::string& id : order) {
    if (!finished.count(id)) j->interrupted_.push_back(id);
  }
  j->file_ = std::fopen(path.c_str(), "a");
  if (!j->file_) return IoError(path + ": " + std::strerror(errno));
  nlohmann::json s = {{"event", "session"},
                      {"session", j->session_},
                      {"pid", static_cast<int64_t>(getpid())},
                      {"launcher", launcher},
                      {"unix_time", std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count()},
                      {"interrupted", j->interrupted_}};
  CANOPY_RETURN_IF_ERROR(j->Append(s.dump()));
  return j;
}

Journal::~Journal() {
  if (file_) std::fclose(file_);
}

Status Journal::Started(const std::string& id) {
  nlohmann::json e = {{"event", "start"}, {"id", id}, {"session", session_}};
  return Append(e.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

Status Journal::Note(const std::string& how, int64_t abandoned) {
  nlohmann::json e = {{"event", how}, {"session", session_}, {"abandoned", abandoned}};
  return Append(e.dump());
}

Status Journal::Append(const std::string& line) {
  std::string l = line + "\n";
  if (std::fwrite(l.data(), 1, l.size(), file_) != l.size() || std::fflush(file_) != 0) {
    return IoError(std::string("journal: ") + std::strerror(errno));
  }
  // The journal is a hint (results.jsonl is the record), so no fsync per line.
  return Status::Ok();
}

}  // namespace canopy
