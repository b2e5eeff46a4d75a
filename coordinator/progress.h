// Progress of a solve job: a one-line bar redrawn in place on a terminal,
//   [#########.....................] 37/100  acc 0.62  412 tok/s  ETA 1m23s
// or, when the output is a file or a pipe (Slurm logs), a plain line at most every
// `log_interval_s` seconds plus one at the end.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

namespace canopy {

struct ProgressOptions {
  std::ostream* out = nullptr;     // nullptr: std::cerr
  int is_tty = -1;                 // -1: ask isatty(stderr); 0 or 1 to force
  std::function<double()> clock;   // seconds, monotonic; empty: steady_clock
  double log_interval_s = 30;      // plain mode: at most one line per interval
  double redraw_interval_s = 0.1;  // terminal mode: at most this often
  int bar_width = 30;
  // Work done before this run started (a resumed job): counted in done/accuracy but not
  // in the rates, so tok/s and the ETA describe this run only.
  int64_t resumed_done = 0;
  int64_t resumed_correct = 0;
  int64_t resumed_tokens = 0;
  bool graded = true;  // false: no gold answers, "acc" shows "ungraded"
};

// Not thread-safe: the coordinator's event loop owns it.
class Progress {
 public:
  Progress(int64_t total, ProgressOptions options = {});

  // Cumulative counts, resumed work included. Draws when it is time to.
  void Update(int64_t done, int64_t correct, int64_t tokens);
  // Draws the final state once more and, on a terminal, ends the line.
  void Finish();

  // The status line for the current counts, without "\r" or newline. Terminal mode:
  // "[###...] 37/100  acc 0.62  412 tok/s  ETA 1m23s"; plain mode:
  // "progress 37/100 (37.0%)  acc 0.620  412 tok/s  elapsed 1m02s  ETA 1m23s".
  std::string Line() const;
  bool tty() const { return tty_; }

 private:
  double Now() const;
  void Draw();

  int64_t total_;
  ProgressOptions opts_;
  std::ostream* out_;
  bool tty_;
  double start_;
  int64_t done_ = 0, correct_ = 0, tokens_ = 0;
  double last_draw_ = -1;  // time of the last draw; < 0: never drawn
  size_t last_width_ = 0;  // terminal mode: length of the line on screen
  bool finished_ = false;
};

// "45s", "1m23s", "2h05m", "3d04h"; "--" for negative or non-finite.
std::string FormatDuration(double seconds);

}  // namespace canopy
