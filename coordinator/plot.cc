#include "coordinator/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace canopy {
namespace {

constexpr const char* kPalette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
constexpr int kMarginLeft = 70, kMarginRight = 24, kMarginTop = 48, kMarginBottom = 60;

std::string Num(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", decimals, v);
  return buf;
}

// A tick label: as many decimals as the step needs, no more.
std::string TickLabel(double v, double step) {
  int decimals = 0;
  if (step > 0 && step < 1) decimals = static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  if (std::fabs(v) >= 1e7) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.3g", v);
    return buf;
  }
  return Num(v, std::clamp(decimals, 0, 6));
}

// 1, 2 or 5 times a power of ten, at least `raw`.
double NiceStep(double raw) {
  if (!(raw > 0)) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= raw * (1 - 1e-9)) return m * p;
  }
  return 10 * p;
}

struct Axis {
  bool log2 = false;
  double lo = 0, hi = 1;                              // in axis units (exponents when log2)
  std::vector<std::pair<double, std::string>> ticks;  // value in data units, label

  double Unit(double v) const { return log2 ? std::log2(v) : v; }
  // Position of data value v in [0, 1].
  double Frac(double v) const { return (Unit(v) - lo) / (hi - lo); }
};

Axis LinearAxis(double min, double max, bool from_zero, double clamp_lo, double clamp_hi) {
  Axis a;
  if (from_zero && min > 0) min = 0;
  if (max - min < 1e-12) {
    const double pad = std::max(std::fabs(max) * 0.1, 1e-3);
    min -= pad;
    max += pad;
  }
  const double step = NiceStep((max - min) / 5);
  a.lo = std::max(clamp_lo, std::floor(min / step + 1e-9) * step);
  a.hi = std::min(clamp_hi, std::ceil(max / step - 1e-9) * step);
  if (a.hi <= a.lo) a.hi = a.lo + step;
  for (int i = 0;; ++i) {
    const double v = a.lo + i * step;
    if (v > a.hi + step * 1e-6) break;
    a.ticks.push_back({v, TickLabel(v, step)});
  }
  return a;
}

Axis Log2Axis(double min, double max) {
  Axis a;
  a.log2 = true;
  a.lo = std::floor(std::log2(min));
  a.hi = std::ceil(std::log2(max));
  if (a.hi <= a.lo) a.hi = a.lo + 1;
  const int every = std::max(1, static_cast<int>(std::ceil((a.hi - a.lo) / 10)));
  for (double e = a.lo; e <= a.hi + 1e-9; e += every) {
    const double v = std::exp2(e);
    a.ticks.push_back({v, v >= 1 ? Num(v, 0) : TickLabel(v, v)});
  }
  return a;
}

}  // namespace

std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // Control characters other than tab/newline are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') {
          out += ' ';
        } else {
          out += c;
        }
    }
  }
  return out;
}

namespace {

// The plot area in pixels, its axes, and how data values map onto it.
struct Frame {
  int width = 0, height = 0;
  double px0 = 0, px1 = 0, py0 = 0, py1 = 0;  // the plot area: left, right, top, bottom
  Axis xa, ya;
  bool log2 = false;      // the x axis is log2
  bool has_data = false;  // some point has finite coordinates

  double X(double v) const { return px0 + xa.Frac(v) * (px1 - px0); }
  double Y(double v) const { return py1 - ya.Frac(v) * (py1 - py0); }
  bool Drawable(const PlotPoint& p) const {
    return std::isfinite(p.tokens) && std::isfinite(p.accuracy) && (!log2 || p.tokens > 0);
  }
};

// The x and y ranges of the points with finite coordinates (min > max when there are none).
struct Extent {
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  bool all_positive = true;  // every such x > 0
};

Extent DataExtent(const std::vector<PlotSeries>& series) {
  Extent e;
  for (const auto& s : series) {
    for (const auto& p : s.points) {
      if (!std::isfinite(p.tokens) || !std::isfinite(p.accuracy)) continue;
      e.xmin = std::min(e.xmin, p.tokens);
      e.xmax = std::max(e.xmax, p.tokens);
      e.ymin = std::min(e.ymin, p.accuracy);
      e.ymax = std::max(e.ymax, p.accuracy);
      e.all_positive = e.all_positive && p.tokens > 0;
    }
  }
  return e;
}

Frame MakeFrame(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  Frame f;
  f.width = std::max(o.width, 200), f.height = std::max(o.height, 160);
  f.px0 = kMarginLeft, f.px1 = f.width - kMarginRight;
  f.py0 = kMarginTop, f.py1 = f.height - kMarginBottom;

  Extent e = DataExtent(series);
  f.has_data = e.xmin <= e.xmax;
  if (!f.has_data) e.xmin = 0, e.xmax = 1, e.ymin = 0, e.ymax = 1;
  f.log2 = o.x_scale == AxisScale::kLog2;
  if (o.x_scale == AxisScale::kAuto) f.log2 = f.has_data && e.all_positive && e.xmax / e.xmin >= 16;
  if (f.log2 && !f.has_data) e.xmin = 1, e.xmax = 2;
  if (f.log2 && e.xmin <= 0) {  // a forced log axis drops the x <= 0 points
    e.xmin = INFINITY;
    for (const auto& s : series)
      for (const auto& p : s.points)
        if (p.tokens > 0 && std::isfinite(p.tokens)) e.xmin = std::min(e.xmin, p.tokens);
    if (!std::isfinite(e.xmin)) e.xmin = 1, e.xmax = 2;
  }
  f.xa = f.log2 ? Log2Axis(e.xmin, e.xmax) : LinearAxis(e.xmin, e.xmax, true, -INFINITY, INFINITY);
  if (o.auto_y && f.has_data) {
    const double pad = std::max(0.02, 0.05 * (e.ymax - e.ymin));
    f.ya = LinearAxis(std::max(0.0, e.ymin - pad), std::min(1.0, e.ymax + pad), false, 0, 1);
  } else {
    f.ya = LinearAxis(0, 1, false, 0, 1);
  }
  return f;
}

// The document's start: background, title, grid, ticks, tick labels, axis labels, and the
// "no data" note when there is none.
void WriteFrame(const Frame& f, const PlotOptions& o, std::ostringstream& svg) {
  const double px0 = f.px0, px1 = f.px1, py0 = f.py0, py1 = f.py1;
  svg << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << f.width << "\" height=\""
      << f.height << "\" viewBox=\"0 0 " << f.width << " " << f.height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect x=\"0\" y=\"0\" width=\"" << f.width << "\" height=\"" << f.height
      << "\" fill=\"white\"/>\n"
      << "<text class=\"title\" x=\"" << Num((px0 + px1) / 2) << "\" y=\"28\" "
      << "text-anchor=\"middle\" font-size=\"16\">" << XmlEscape(o.title) << "</text>\n";

  // Grid, ticks and tick labels.
  svg << "<g class=\"x-axis\" stroke-width=\"1\">\n";
  for (const auto& [v, label] : f.xa.ticks) {
    const std::string x = Num(f.X(v));
    svg << "<line x1=\"" << x << "\" y1=\"" << Num(py0) << "\" x2=\"" << x << "\" y2=\"" << Num(py1)
        << "\" stroke=\"#e5e5e5\"/>"
        << "<text class=\"tick\" x=\"" << x << "\" y=\"" << Num(py1 + 18)
        << "\" text-anchor=\"middle\">" << XmlEscape(label) << "</text>\n";
  }
  svg << "</g>\n<g class=\"y-axis\" stroke-width=\"1\">\n";
  for (const auto& [v, label] : f.ya.ticks) {
    const std::string y = Num(f.Y(v));
    svg << "<line x1=\"" << Num(px0) << "\" y1=\"" << y << "\" x2=\"" << Num(px1) << "\" y2=\"" << y
        << "\" stroke=\"#e5e5e5\"/>"
        << "<text class=\"tick\" x=\"" << Num(px0 - 8) << "\" y=\"" << Num(f.Y(v) + 4)
        << "\" text-anchor=\"end\">" << XmlEscape(label) << "</text>\n";
  }
  svg << "</g>\n"
      << "<rect x=\"" << Num(px0) << "\" y=\"" << Num(py0) << "\" width=\"" << Num(px1 - px0)
      << "\" height=\"" << Num(py1 - py0) << "\" fill=\"none\" stroke=\"#333\"/>\n"
      << "<text class=\"x-label\" x=\"" << Num((px0 + px1) / 2) << "\" y=\"" << f.height - 16
      << "\" text-anchor=\"middle\">" << XmlEscape(o.x_label + (f.log2 ? " (log2 scale)" : ""))
      << "</text>\n"
      << "<text class=\"y-label\" x=\"18\" y=\"" << Num((py0 + py1) / 2)
      << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " << Num((py0 + py1) / 2) << ")\">"
      << XmlEscape(o.y_label) << "</text>\n";
  if (!f.has_data) {
    svg << "<text class=\"no-data\" x=\"" << Num((px0 + px1) / 2) << "\" y=\""
        << Num((py0 + py1) / 2) << "\" text-anchor=\"middle\" fill=\"#888\">no data</text>\n";
  }
}

// The colour of series `i`, escaped: its own, else the palette's.
std::string SeriesColor(const PlotSeries& s, size_t i) {
  return XmlEscape(s.color.empty() ? kPalette[i % std::size(kPalette)] : s.color);
}

// Each series' line and markers (with a tooltip each), its drawable points sorted by x.
void WriteSeries(const Frame& f, const std::vector<PlotSeries>& series, std::ostringstream& svg) {
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const std::string color = SeriesColor(s, i);
    std::vector<PlotPoint> pts;
    for (const auto& p : s.points)
      if (f.Drawable(p)) pts.push_back(p);
    if (pts.empty()) continue;
    std::sort(pts.begin(), pts.end(),
              [](const PlotPoint& a, const PlotPoint& b) { return a.tokens < b.tokens; });
    svg << "<g class=\"series\">\n<polyline fill=\"none\" stroke=\"" << color
        << "\" stroke-width=\"2\" points=\"";
    for (size_t k = 0; k < pts.size(); ++k) {
      svg << (k ? " " : "") << Num(f.X(pts[k].tokens)) << "," << Num(f.Y(pts[k].accuracy));
    }
    svg << "\"/>\n";
    for (const auto& p : pts) {
      svg << "<circle cx=\"" << Num(f.X(p.tokens)) << "\" cy=\"" << Num(f.Y(p.accuracy))
          << "\" r=\"3.5\" fill=\"" << color << "\"><title>"
          << XmlEscape(s.label + ": " + Num(p.tokens, 0) + " tokens, accuracy " +
                       Num(p.accuracy, 3))
          << "</title></circle>\n";
    }
    svg << "</g>\n";
  }
}

// The legend, top left inside the plot, where accuracy curves rarely go.
void WriteLegend(const Frame& f, const std::vector<PlotSeries>& series, std::ostringstream& svg) {
  if (series.empty()) return;
  size_t longest = 0;
  for (const auto& s : series) longest = std::max(longest, s.label.size());
  const double lx = f.px0 + 10, ly = f.py0 + 10;
  const double lw = 46 + 7.5 * std::min<size_t>(longest, 60), lh = 8 + 18.0 * series.size();
  svg << "<g class=\"legend\">\n<rect x=\"" << Num(lx) << "\" y=\"" << Num(ly) << "\" width=\""
      << Num(lw) << "\" height=\"" << Num(lh)
      << "\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#999\"/>\n";
  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const std::string color = SeriesColor(s, i);
    const double y = ly + 16 + 18.0 * i;
    svg << "<line x1=\"" << Num(lx + 6) << "\" y1=\"" << Num(y - 4) << "\" x2=\"" << Num(lx + 28)
        << "\" y2=\"" << Num(y - 4) << "\" stroke=\"" << color
        << "\" stroke-width=\"2\"/><text class=\"legend-label\" x=\"" << Num(lx + 34) << "\" y=\""
        << Num(y) << "\">" << XmlEscape(s.label) << "</text>\n";
  }
  svg << "</g>\n";
}

}  // namespace

std::string AccuracyVsBudgetSvg(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  const Frame f = MakeFrame(series, o);
  std::ostringstream svg;
  WriteFrame(f, o, svg);
  WriteSeries(f, series, svg);
  WriteLegend(f, series, svg);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace canopy
