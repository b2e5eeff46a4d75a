// A queue of events handed from network threads to one consumer thread (the coordinator's
// event loop, a worker's engine loop). Producers Push from any thread; the consumer takes
// everything queued at once, waiting up to a deadline when there is nothing.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

namespace canopy {

template <typename T>
class EventQueue {
 public:
  void Push(T event) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back(std::move(event));
    }
    cv_.notify_one();
  }

  // Everything queued now, without waiting.
  std::vector<T> TakeAll() {
    std::lock_guard<std::mutex> lock(mu_);
    return TakeLocked();
  }

  // Everything queued, waiting until `deadline` if there is nothing yet ({} on timeout).
  std::vector<T> WaitAndTakeAll(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return !events_.empty(); });
    return TakeLocked();
  }

 private:
  std::vector<T> TakeLocked() {
    std::vector<T> out(std::make_move_iterator(events_.begin()), std::make_move_iterator(events_.end()));
    events_.clear();
    return out;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> events_;
};

}  // namespace canopy
