// Accuracy-vs-compute plots as standalone SVG (no plotting library, opens in any browser):
// x = tokens per problem, y = accuracy, one line per strategy. The curve that test-time
// compute papers draw.
#pragma once

#include <string>
#include <vector>

namespace canopy {

struct PlotPoint {
  double tokens = 0;    // mean tokens per problem at this budget
  double accuracy = 0;  // 0..1
};

struct PlotSeries {
  std::string label;              // legend text, e.g. "beam/policy-logprob"
  std::vector<PlotPoint> points;  // any order; drawn sorted by tokens
  std::string color;              // CSS colour; "" picks from a palette
};

enum class AxisScale { kAuto, kLinear, kLog2 };

struct PlotOptions {
  std::string title = "Accuracy vs. test-time compute";
  std::string x_label = "tokens per problem";
  std::string y_label = "accuracy";
  int width = 720;
  int height = 480;
  // kAuto: log2 when all x > 0 and max/min >= 16.
  AxisScale x_scale = AxisScale::kAuto;
  // false: y spans 0..1. true: y spans the data, padded, rounded to ticks, within 0..1.
  bool auto_y = false;
};

// A complete SVG document. Text is XML-escaped; points with non-finite coordinates (or
// x <= 0 on a log axis) are dropped. With no points the axes are drawn with a "no data"
// note.
std::string AccuracyVsBudgetSvg(const std::vector<PlotSeries>& series,
                                const PlotOptions& options = {});

// Escapes &, <, >, " and ' for XML text and attributes.
std::string XmlEscape(const std::string& text);

}  // namespace canopy
