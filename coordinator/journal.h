// The coordinator's journal (OUTPUT/journal.jsonl): one line per session start and per
// problem started, appended and flushed, beside results.jsonl (which records finished
// problems). After a crash, the problems the journal shows started but results.jsonl lacks
// were in flight; the next session goes on from their checkpoints (coordinator/checkpoint.h)
// or, without one, solves them again from scratch, which (seeds depend only on the job seed
// and the problem) gives the results they would have had.
//
//   {"event":"session","session":2,"pid":1234,"launcher":"listen","unix_time":...}
//   {"event":"start","id":"gsm8k-17","session":2}
//   {"event":"checkpoint","reason":"period","problems":8,"bytes":91234,"ms":3.1,"session":2}
//   {"event":"restored","id":"gsm8k-17","expansions":41,"tokens":5120,"session":3}
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/status.h"

namespace canopy {

// Writes through `env` (Env::Default() when not given), which must outlive the journal. Not
// thread-safe: one owner (the coordinator's event loop) writes.
class Journal {
 public:
  // Reads OUTPUT/journal.jsonl if present, cuts a torn last line (one without its newline)
  // away, then appends this session's line. `finished` are the ids results.jsonl holds.
  static StatusOr<std::unique_ptr<Journal>> Open(const std::string& dir, const std::string& launcher,
                                                 const std::set<std::string>& finished,
                                                 Env* env = Env::Default());
  ~Journal();

  // Each appends one line. On failure (a full disk, an I/O error) the IoError names the file
  // and the file is cut back to its size before, so it never holds half a line.
  Status Started(const std::string& id);
  // A round of checkpoints written (`reason`: period, drain, stop), and a problem that went
  // on from its checkpoint with the expansions and tokens it did not have to repeat.
  Status Checkpointed(const std::string& reason, int64_t problems, uint64_t bytes, double milliseconds);
  Status Restored(const std::string& id, int64_t expansions, int64_t tokens);
  // The session ends early: `how` ("drained", "stopped"), with `abandoned` problems in flight.
  Status Note(const std::string& how, int64_t abandoned);

  int session() const { return session_; }
  // Started in an earlier session and not finished: they were in flight when it ended.
  const std::vector<std::string>& interrupted() const { return interrupted_; }

 private:
  Status Append(const std::string& line);
  std::unique_ptr<WritableFile> file_;
  int session_ = 1;
  std::vector<std::string> interrupted_;
};

}  // namespace canopy
