// ctest-labels: unit
#include "coordinator/progress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

namespace canopy {
namespace {

struct FakeClock {
  double now = 1000;
  std::function<double()> Fn() {
    return [this] { return now; };
  }
};

TEST(ProgressTest, FormatDuration) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(45.4), "45s");
  EXPECT_EQ(FormatDuration(83), "1m23s");
  EXPECT_EQ(FormatDuration(3600 * 2 + 5 * 60 + 7), "2h05m");
  EXPECT_EQ(FormatDuration(86400 * 3 + 3600 * 4), "3d04h");
  EXPECT_EQ(FormatDuration(-1), "--");
  EXPECT_EQ(FormatDuration(NAN), "--");
}

TEST(ProgressTest, TerminalBar) {
  std::ostringstream out;
  FakeClock clock;
  ProgressOptions opts;
  opts.out = &out;
  opts.is_tty = 1;
  opts.clock = clock.Fn();
  opts.bar_width = 10;
  Progress p(100, opts);
  EXPECT_TRUE(p.tty());
  EXPECT_EQ(p.Line(), "[..........] 0/100  acc --  0.0 tok/s  ETA --");

  clock.now += 100;  // 37 problems and 41200 tokens in 100 s
  p.Update(37, 23, 41200);
  EXPECT_EQ(out.str(), "\r[###.......] 37/100  acc 0.62  412 tok/s  ETA 2m50s");

  // Redraws are throttled to redraw_interval_s.
  clock.now += 0.01;
  p.Update(38, 23, 41300);
  EXPECT_EQ(out.str(), "\r[###.......] 37/100  acc 0.62  412 tok/s  ETA 2m50s");

  clock.now += 1;
  p.Update(100, 60, 101000);  // complete: always drawn
  std::string s = out.str();
  s = s.substr(s.rfind('\r'));
  // Padded with spaces over the longer line before it.
  EXPECT_EQ(s, "\r[##########] 100/100  acc 0.60  1000 tok/s  ETA 0s ");
  p.Finish();
  EXPECT_TRUE(out.str().ends_with("ETA 0s\n"));
}

TEST(ProgressTest, TerminalPadsOverLongerLine) {
  std::ostringstream out;
  FakeClock clock;
  ProgressOptions opts;
  opts.out = &out;
  opts.is_tty = 1;
  opts.clock = clock.Fn();
  opts.bar_width = 4;
  Progress p(10, opts);
  clock.now += 1;
  p.Update(1, 1, 123456);                     // "123456 tok/s"
  const size_t first = out.str().size() - 1;  // without the "\r"
  clock.now += 0.5;
  p.Update(2, 1, 123460);  // 82307 tok/s: one character shorter
  const std::string s = out.str();
  const std::string second = s.substr(s.rfind('\r') + 1);
  EXPECT_EQ(second.size(), first);
  EXPECT_TRUE(second.ends_with(" ")) << second;
}

TEST(ProgressTest, PlainLinesAreRateLimited) {
  std::ostringstream out;
  FakeClock clock;
  ProgressOptions opts;
  opts.out = &out;
  opts.is_tty = 0;
  opts.clock = clock.Fn();
  opts.log_interval_s = 10;
  Progress p(4, opts);
  EXPECT_FALSE(p.tty());

  clock.now += 2;
  p.Update(1, 1, 200);  // first update: a line
  clock.now += 2;
  p.Update(2, 1, 400);  // within 10 s: none
  clock.now += 9;
  p.Update(3, 2, 1300);  // 11 s after the first line: a line
  clock.now += 1;
  p.Update(4, 3, 1400);  // complete: a line
  p.Update(4, 3, 1400);  // nothing new
  p.Finish();            // already printed the final state

  std::istringstream in(out.str());
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u) << out.str();
  EXPECT_EQ(lines[0], "progress 1/4 (25.0%)  acc 1.000  100 tok/s  elapsed 2s  ETA 6s");
  EXPECT_EQ(lines[1], "progress 3/4 (75.0%)  acc 0.667  100 tok/s  elapsed 13s  ETA 4s");
  EXPECT_EQ(lines[2], "progress 4/4 (100.0%)  acc 0.750  100 tok/s  elapsed 14s  ETA 0s");
  EXPECT_EQ(out.str().find('\r'), std::string::npos);
}

TEST(ProgressTest, ResumedWorkIsNotInTheRates) {
  std::ostringstream out;
  FakeClock clock;
  ProgressOptions opts;
  opts.out = &out;
  opts.is_tty = 0;
  opts.clock = clock.Fn();
  opts.resumed_done = 50;
  opts.resumed_correct = 40;
  opts.resumed_tokens = 1000000;
  Progress p(100, opts);
  clock.now += 10;
  p.Update(60, 45, 1001000);  // this run: 10 problems, 1000 tokens in 10 s
  EXPECT_EQ(p.Line(), "progress 60/100 (60.0%)  acc 0.750  100 tok/s  elapsed 10s  ETA 40s");
}

TEST(ProgressTest, FinishOnAnUnfinishedPlainJob) {
  std::ostringstream out;
  FakeClock clock;
  ProgressOptions opts;
  opts.out = &out;
  opts.is_tty = 0;
  opts.clock = clock.Fn();
  Progress p(10, opts);
  clock.now += 1;
  p.Update(1, 0, 10);
  clock.now += 1;
  p.Update(2, 0, 20);  // throttled
  p.Finish();          // shows the last state
  EXPECT_TRUE(
      out.str().ends_with("progress 2/10 (20.0%)  acc 0.000  10 tok/s  elapsed 2s  ETA 8s\n"))
      << out.str();
}

}  // namespace
}  // namespace canopy
