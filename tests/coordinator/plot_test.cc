// ctest-labels: unit
#include "coordinator/plot.h"

#include <gtest/gtest.h>

#include <cmath>
#include <regex>

namespace canopy {
namespace {

int Count(const std::string& s, const std::string& needle) {
  int n = 0;
  for (size_t pos = s.find(needle); pos != std::string::npos; pos = s.find(needle, pos + 1)) ++n;
  return n;
}

// The texts of <text class="CLASS" ...>...</text> elements.
std::vector<std::string> Texts(const std::string& svg, const std::string& cls) {
  std::vector<std::string> out;
  std::regex re("<text class=\"" + cls + "\"[^>]*>([^<]*)</text>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    out.push_back((*it)[1]);
  }
  return out;
}

// Every number inside a polyline's points="..." attribute.
std::vector<double> PolylineCoords(const std::string& svg) {
  std::vector<double> out;
  std::regex re("<polyline[^>]*points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator();
       ++it) {
    std::string pts = (*it)[1];
    std::regex num("-?[0-9]+(\\.[0-9]+)?");
    for (auto n = std::sregex_iterator(pts.begin(), pts.end(), num); n != std::sregex_iterator();
         ++n) {
      out.push_back(std::stod(n->str()));
    }
  }
  return out;
}

std::vector<PlotSeries> TwoSeries() {
  return {
      {"self-consistency", {{256, 0.30}, {1024, 0.42}, {4096, 0.50}, {16384, 0.55}}, ""},
      {"beam/policy-logprob", {{2048, 0.47}, {512, 0.35}, {8192, 0.58}}, "#123456"},
  };
}

TEST(PlotTest, StructureAndLabels) {
  PlotOptions opts;
  opts.title = "GSM8K: accuracy vs. compute";
  const std::string svg = AccuracyVsBudgetSvg(TwoSeries(), opts);
  EXPECT_TRUE(svg.starts_with("<?xml"));
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  EXPECT_EQ(Count(svg, "<svg"), 1);
  EXPECT_EQ(Count(svg, "<polyline"), 2);
  EXPECT_EQ(Count(svg, "<circle"), 7);
  EXPECT_EQ(Count(svg, "<g"), Count(svg, "</g>"));
  EXPECT_EQ(Count(svg, "<text"), Count(svg, "</text>"));

  EXPECT_EQ(Texts(svg, "title"), std::vector<std::string>{"GSM8K: accuracy vs. compute"});
  EXPECT_EQ(Texts(svg, "legend-label"),
            (std::vector<std::string>{"self-consistency", "beam/policy-logprob"}));
  EXPECT_NE(svg.find("stroke=\"#123456\""), std::string::npos);
  // 256..16384 is a wide range: a log2 axis with power-of-two ticks.
  ASSERT_EQ(Texts(svg, "x-label").size(), 1u);
  EXPECT_NE(Texts(svg, "x-label")[0].find("log2"), std::string::npos);
  std::vector<std::string> ticks = Texts(svg, "tick");
  for (const char* t : {"256", "1024", "16384", "0.0", "0.4", "1.0"}) {
    EXPECT_NE(std::find(ticks.begin(), ticks.end(), t), ticks.end()) << t;
  }

  // All line points lie inside the plot area.
  std::vector<double> c = PolylineCoords(svg);
  ASSERT_EQ(c.size(), 14u);
  for (size_t i = 0; i < c.size(); i += 2) {
    EXPECT_GE(c[i], 70);
    EXPECT_LE(c[i], 720 - 24);
    EXPECT_GE(c[i + 1], 48);
    EXPECT_LE(c[i + 1], 480 - 60);
  }
  // Points are drawn left to right, and higher accuracy is higher up (smaller y).
  EXPECT_LT(c[0], c[2]);
  EXPECT_GT(c[1], c[3]);
  // The second series was given out of order; it is drawn sorted.
  EXPECT_LT(c[8], c[10]);
  EXPECT_LT(c[10], c[12]);
}

TEST(PlotTest, LinearAxisForNarrowRanges) {
  PlotOptions opts;
  opts.auto_y = true;
  const std::string svg =
      AccuracyVsBudgetSvg({{"best-of-n", {{100, 0.61}, {200, 0.64}, {400, 0.70}}, ""}}, opts);
  EXPECT_EQ(Texts(svg, "x-label"), std::vector<std::string>{"tokens per problem"});
  std::vector<std::string> ticks = Texts(svg, "tick");
  EXPECT_NE(std::find(ticks.begin(), ticks.end(), "0"), ticks.end());  // x starts at 0
  EXPECT_NE(std::find(ticks.begin(), ticks.end(), "400"), ticks.end());
  // auto_y zooms in: no tick at 0.0 or 1.0 for data in 0.61..0.70.
  EXPECT_EQ(std::find(ticks.begin(), ticks.end(), "1.0"), ticks.end());
  EXPECT_EQ(std::find(ticks.begin(), ticks.end(), "0.00"), ticks.end());
  EXPECT_EQ(Count(svg, "<polyline"), 1);
}

TEST(PlotTest, EscapesText) {
  PlotOptions opts;
  opts.title = "a < b & \"c\"";
  const std::string svg =
      AccuracyVsBudgetSvg({{"mcts<prm-token>&'x'", {{1, 0.5}, {2, 0.6}}, ""}}, opts);
  EXPECT_NE(svg.find("a &lt; b &amp; &quot;c&quot;"), std::string::npos);
  EXPECT_NE(svg.find("mcts&lt;prm-token&gt;&amp;&apos;x&apos;"), std::string::npos);
  EXPECT_EQ(svg.find("a < b"), std::string::npos);
  EXPECT_EQ(svg.find("<prm-token>"), std::string::npos);
  EXPECT_EQ(XmlEscape("x\x01y"), "x y");
}

TEST(PlotTest, NoDataAndBadPoints) {
  std::string svg = AccuracyVsBudgetSvg({});
  EXPECT_EQ(Count(svg, "<polyline"), 0);
  EXPECT_EQ(Texts(svg, "no-data"), std::vector<std::string>{"no data"});
  EXPECT_TRUE(svg.ends_with("</svg>\n"));

  // Non-finite points are dropped; a series without drawable points has no line but keeps
  // its legend entry.
  svg = AccuracyVsBudgetSvg(
      {{"ok", {{10, 0.1}, {NAN, 0.2}, {20, INFINITY}, {40, 0.3}}, ""}, {"empty", {}, ""}});
  EXPECT_EQ(Count(svg, "<polyline"), 1);
  EXPECT_EQ(Count(svg, "<circle"), 2);
  EXPECT_EQ(Texts(svg, "legend-label").size(), 2u);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);

  // A forced log axis drops x <= 0.
  PlotOptions log;
  log.x_scale = AxisScale::kLog2;
  svg = AccuracyVsBudgetSvg({{"s", {{0, 0.1}, {8, 0.2}, {64, 0.3}}, ""}}, log);
  EXPECT_EQ(Count(svg, "<circle"), 2);
  EXPECT_EQ(PolylineCoords(svg).size(), 4u);
}

}  // namespace
}  // namespace canopy
