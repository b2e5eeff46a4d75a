#include "coordinator/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace canopy {
namespace {

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const int64_t s = static_cast<int64_t>(std::llround(seconds));
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof(buf), "%llds", static_cast<long long>(s));
  } else if (s < 3600) {
    std::snprintf(buf, sizeof(buf), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof(buf), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lldd%02lldh", static_cast<long long>(s / 86400),
                  static_cast<long long>(s % 86400 / 3600));
  }
  return buf;
}

Progress::Progress(int64_t total, ProgressOptions options)
    : total_(std::max<int64_t>(total, 0)), opts_(std::move(options)) {
  out_ = opts_.out ? opts_.out : &std::cerr;
  tty_ = opts_.is_tty >= 0 ? opts_.is_tty != 0 : ::isatty(STDERR_FILENO) == 1;
  if (!opts_.clock) {
    opts_.clock = [] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
          .count();
    };
  }
  start_ = Now();
  done_ = opts_.resumed_done;
  correct_ = opts_.resumed_correct;
  tokens_ = opts_.resumed_tokens;
}

double Progress::Now() const { return opts_.clock(); }

std::string Progress::Line() const {
  const double elapsed = Now() - start_;
  const int64_t run_done = done_ - opts_.resumed_done;
  const int64_t run_tokens = tokens_ - opts_.resumed_tokens;
  const double tok_s = elapsed > 0 ? run_tokens / elapsed : 0;
  std::string eta = "--";
  if (done_ >= total_) {
    eta = "0s";
  } else if (run_done > 0 && elapsed > 0) {
    eta = FormatDuration((total_ - done_) * elapsed / run_done);
  }
  const std::string acc = !opts_.graded ? "ungraded"
                          : done_ > 0   ? Fixed(static_cast<double>(correct_) / done_, tty_ ? 2 : 3)
                                        : "--";
  const std::string rate = Fixed(tok_s, tok_s < 10 ? 1 : 0) + " tok/s";
  const std::string count = std::to_string(done_) + "/" + std::to_string(total_);

  if (tty_) {
    const int width = std::max(opts_.bar_width, 1);
    const double frac = total_ > 0 ? std::clamp(static_cast<double>(done_) / total_, 0.0, 1.0) : 1;
    const int filled = static_cast<int>(std::floor(frac * width));
    return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] " + count +
           "  acc " + acc + "  " + rate + "  ETA " + eta;
  }
  const double pct = total_ > 0 ? 100.0 * done_ / total_ : 100.0;
  return "progress " + count + " (" + Fixed(pct, 1) + "%)  acc " + acc + "  " + rate +
         "  elapsed " + FormatDuration(elapsed) + "  ETA " + eta;
}

void Progress::Update(int64_t done, int64_t correct, int64_t tokens) {
  done_ = done;
  correct_ = correct;
  tokens_ = tokens;
  const double now = Now();
  const bool complete = done_ >= total_;
  const double interval = tty_ ? opts_.redraw_interval_s : opts_.log_interval_s;
  if (last_draw_ < 0 || now - last_draw_ >= interval || (complete && !finished_)) {
    Draw();
    last_draw_ = now;
    // A plain log gets one line at completion, however many updates follow.
    if (complete && !tty_) finished_ = true;
  }
}

void Progress::Finish() {
  if (tty_) {
    Draw();
    *out_ << "\n" << std::flush;
    last_width_ = 0;
  } else if (!finished_) {
    Draw();
  }
  finished_ = true;
}

void Progress::Draw() {
  const std::string line = Line();
  if (tty_) {
    // Pad with spaces over what is left of a longer previous line.
    std::string pad(last_width_ > line.size() ? last_width_ - line.size() : 0, ' ');
    *out_ << "\r" << line << pad << std::flush;
    last_width_ = line.size();
  } else {
    *out_ << line << "\n" << std::flush;
  }
}

}  // namespace canopy
