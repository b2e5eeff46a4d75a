// Who is in the job: workers register with their capabilities, send heartbeats, and are
// declared dead when silent past a deadline; workers may join a running job and leave it
// (drain). Pure bookkeeping over a caller-supplied clock, so failure detection is tested
// without sleeping; the coordinator's event loop owns it (not thread-safe).
//
//   Join ──► alive ──(no heartbeat for `deadline` s)──► dead   (final: a dead worker that
//              │                                                 comes back joins anew
//              └──(Leave)──► left                               with a new id)
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "common/status.h"
#include "transport/protocol.h"

namespace canopy {

enum class WorkerState { kAlive, kDead, kLeft };
const char* WorkerStateName(WorkerState s);

struct WorkerRecord {
  int32_t id = 0;
  Capabilities capabilities;
  WorkerState state = WorkerState::kAlive;
  double joined_at = 0.0;
  double last_heard = 0.0;
};

class Membership {
 public:
  // `deadline_s`: a worker silent this long is dead (e.g. 3 missed heartbeats).
  explicit Membership(double deadline_s);

  // A new worker (ids start at 1 and are never reused).
  int32_t Join(const Capabilities& capabilities, double now);
  // Any message from a worker counts as a heartbeat. FailedPrecondition for a dead or
  // departed worker (it must join again), NotFound for an unknown id.
  Status Heard(int32_t id, double now);
  // A graceful departure (after a drain).
  Status Leave(int32_t id);
  // Declares every alive worker silent since before now - deadline dead; returns them in id
  // order. The caller re-sends their outstanding work elsewhere.
  std::vector<int32_t> Expire(double now);
  // The earliest time at which Expire could find someone (for the event loop's timer); a
  // negative value when no worker is alive.
  double NextDeadline() const;

  std::vector<int32_t> Alive() const;
  const WorkerRecord* Find(int32_t id) const;
  double deadline() const { return deadline_; }

 private:
  double deadline_;
  int32_t next_id_ = 1;
  std::map<int32_t, WorkerRecord> workers_;
};

}  // namespace canopy
