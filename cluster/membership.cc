#include "cluster/membership.h"

namespace canopy {

const char* WorkerStateName(WorkerState s) {
  switch (s) {
    case WorkerState::kAlive: return "alive";
    case WorkerState::kDead: return "dead";
    case WorkerState::kLeft: return "left";
  }
  return "?";
}

Membership::Membership(double deadline_s) : deadline_(deadline_s) {
  CANOPY_CHECK(deadline_s > 0) << deadline_s;
}

int32_t Membership::Join(const Capabilities& capabilities, double now) {
  WorkerRecord r;
  r.id = next_id_++;
  r.capabilities = capabilities;
  r.joined_at = now;
  r.last_heard = now;
  workers_[r.id] = r;
  return r.id;
}

Status Membership::Heard(int32_t id, double now) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return NotFoundError("membership: no worker " + std::to_string(id));
  if (it->second.state != WorkerState::kAlive) {
    return FailedPreconditionError("membership: worker " + std::to_string(id) + " is " +
                                   WorkerStateName(it->second.state) + "; it must join again");
  }
  if (now > it->second.last_heard) it->second.last_heard = now;
  return Status::Ok();
}

Status Membership::Leave(int32_t id) {
  auto it = workers_.find(id);
  if (it == workers_.end()) return NotFoundError("membership: no worker " + std::to_string(id));
  if (it->second.state == WorkerState::kAlive) it->second.state = WorkerState::kLeft;
  return Status::Ok();
}

std::vector<int32_t> Membership::Expire(double now) {
  std::vector<int32_t> dead;
  for (auto& [id, r] : workers_) {
    if (r.state == WorkerState::kAlive && now - r.last_heard >= deadline_) {
      r.state = WorkerState::kDead;
      dead.push_back(id);
    }
  }
  return dead;
}

double Membership::NextDeadline() const {
  double next = -1.0;
  for (const auto& [id, r] : workers_) {
    if (r.state != WorkerState::kAlive) continue;
    double d = r.last_heard + deadline_;
    if (next < 0 || d < next) next = d;
  }
  return next;
}

std::vector<int32_t> Membership::Alive() const {
  std::vector<int32_t> out;
  for (const auto& [id, r] : workers_) {
    if (r.state == WorkerState::kAlive) out.push_back(id);
  }
  return out;
}

const WorkerRecord* Membership::Find(int32_t id) const {
  auto it = workers_.find(id);
  return it == workers_.end() ? nullptr : &it->second;
}

}  // namespace canopy
