// Checkpoints of problems in flight: one file per problem under OUT/checkpoints/, written
// atomically (temporary file, fsync, rename, fsync of the folder), removed once the
// problem's result line is written, read back when a job restarts.
//
// NOTE the file
//   offset  0  "CANOPYCK"                      magic
//           8  u32 version                     StrategyState::kVersion (checkpoint.capnp)
//          12  u32 0                           reserved
//          16  u64 payload bytes               the rest of the file, exactly
//          24  u64 XXH3-64 of the payload      a torn or flipped byte is caught here
//          32  payload: one Cap'n Proto message (transport/checkpoint.capnp), flat array
//   all little-endian. A file that fails any check is refused with a warning naming it and
//   what was wrong; it is left where it is (the next checkpoint of its problem replaces it)
//   and the problem starts again from its root.
//
// File names: HASH.ckpt, HASH the 16 hex digits of XXH3-64(problem id) (ids may hold any
// character); the id itself is inside and checked on load. A write goes through
// HASH.ckpt.tmp.PID; one left by a process killed mid-write (no process PID on this host)
// is removed when the next session starts. Other files in the folder are never read,
// changed or removed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/env.h"
#include "common/status.h"
#include "search/strategy_state.h"

namespace canopy {

struct ProblemCheckpoint {
  std::string problem_id;
  double seconds_spent = 0.0;  // search time before the checkpoint (the seconds budget goes on)
  StrategyState state;
};

// The file's bytes, and back. Decode errors are DataLoss and say what was wrong.
std::string EncodeCheckpoint(const ProblemCheckpoint& c);
StatusOr<ProblemCheckpoint> DecodeCheckpoint(std::string_view bytes);

class CheckpointStore {
 public:
  // `dir` is created on the first write. `env` (not owned) defaults to Env::Default().
  explicit CheckpointStore(std::string dir, Env* env = nullptr);

  // Replaces the problem's checkpoint atomically; returns the bytes written.
  StatusOr<uint64_t> Write(const ProblemCheckpoint& c);
  // Removes the problem's checkpoint, if there is one.
  Status Remove(const std::string& problem_id);
  // Every checkpoint that reads back whole, by problem id. Each file refused is named in
  // `refused` with why ("DIR/ab12....ckpt: checksum mismatch (truncated or corrupt)").
  std::map<std::string, ProblemCheckpoint> Load(std::vector<std::string>* refused) const;
  // Removes the temporary files (HASH.ckpt.tmp.PID) of writes cut short: those whose PID
  // names no process on this host. Returns the paths removed; a temporary file of a live
  // process, and every file not named like ours, is left alone.
  std::vector<std::string> RemoveInterruptedWrites();

  std::string PathOf(const std::string& problem_id) const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  Env* env_;
  bool dir_made_ = false;
};

}  // namespace canopy
