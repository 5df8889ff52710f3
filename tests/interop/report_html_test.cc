// `qcrash report`: the explore report's page data (write log zones, ops,
// per-point verdicts, also under --jobs), the HTML's self-containment (no
// URL to load, a data block nothing can break out of), the page rendered by
// headless Chromium (Debian's chromium: skipped only when it is absent),
// and bad input (one line, non-zero exit, nothing written).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/interop/interop_util.h"

namespace qcrash::interop {
namespace {

using nlohmann::json;

// The path of chromium, or "" when it is not installed.
std::string Chromium() {
  for (const char* name : {"chromium", "chromium-browser"}) {
    const std::string command = std::string("command -v ") + name + " >/dev/null 2>&1";
    if (std::system(command.c_str()) == 0) return name;
  }
  return "";
}

// An unsafe run of the default workload: I1 violations (and a report).
json ExploreDefault(const ScratchDir& dir, const std::string& extra = "") {
  const RunResult run = dir.Qcrash("explore --workload builtin:default --policy unsafe " + extra +
                                   " --report R.json");
  EXPECT_EQ(run.exit_code, 1) << run.out << run.err;
  return json::parse(ReadFileBytes(dir.File("R.json")));
}

TEST(ReportPage, ExploreReportCarriesTheLogZonesOpsAndPoints) {
  ScratchDir dir;
  const json r = ExploreDefault(dir);
  const json& log = r.at("write_log");
  uint64_t zone_writes = 0, unowned = 0, data = 0, l2 = 0;
  for (const json& z : log.at("zone_totals")) {
    zone_writes += z.at("writes").get<uint64_t>();
    if (z.at("zone") == "unowned") unowned = z.at("writes");
    if (z.at("zone") == "data") data = z.at("writes");
    if (z.at("zone") == "L2 table") l2 = z.at("writes");
  }
  uint64_t write_records = 0;
  for (const json& rec : log.at("records"))
    write_records += rec.at(0) == "write" || rec.at(0) == "write-fua";
  EXPECT_EQ(zone_writes, write_records);
  EXPECT_EQ(unowned, 0u) << "every write of the default workload lands in a structure";
  EXPECT_GT(data, 0u);
  EXPECT_GT(l2, 0u);
  // Ops tile the log in order.
  const json& ops = r.at("ops");
  ASSERT_FALSE(ops.empty());
  for (size_t i = 1; i < ops.size(); ++i) EXPECT_EQ(ops[i].at("start"), ops[i - 1].at("end"));
  EXPECT_EQ(ops.back().at("end"), log.at("record_count"));
  // Every point of the prefix enumerator was checked once; the ranges sum to
  // the verdict counts.
  const json& points = r.at("points");
  EXPECT_EQ(points.at("count"), r.at("crash_points"));
  EXPECT_EQ(points.at("by_worst_verdict").at("unchecked"), 0);
  // [first, end, worst, states by verdict (6)..., violating states].
  uint64_t states = 0, violating = 0;
  for (const json& range : points.at("ranges")) {
    ASSERT_EQ(range.size(), 3u + 6u + 1u);
    for (size_t v = 3; v < 9; ++v) states += range[v].get<uint64_t>();
    violating += range.at(9).get<uint64_t>();
  }
  EXPECT_EQ(states, r.at("states_checked").get<uint64_t>());
  EXPECT_EQ(violating, r.at("violating_states").get<uint64_t>());
  EXPECT_GT(points.at("violating_points").get<uint64_t>(), 0u);
}

TEST(ReportPage, JobsMergeThePerPointVerdicts) {
  ScratchDir dir;
  const json one = ExploreDefault(dir, "--enumerator drop-one");
  const json two = ExploreDefault(dir, "--enumerator drop-one --jobs 2");
  EXPECT_EQ(one.at("points"), two.at("points"));
  EXPECT_EQ(one.at("states_checked"), two.at("states_checked"));
}

TEST(ReportPage, HtmlIsSelfContainedAndRendersTheViolations) {
  ScratchDir dir;
  ExploreDefault(dir);
  const RunResult made = dir.Qcrash("report R.json -o r.html");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string html = ReadFileBytes(dir.File("r.html"));
  for (const char* banned : {"http://", "https://", "src=", "href=", "url(", "@import", "fetch(",
                             "XMLHttpRequest", "<link", "<iframe", "<img"}) {
    EXPECT_EQ(html.find(banned), std::string::npos) << "the page references " << banned;
  }
  EXPECT_NE(html.find("default-src 'none'"), std::string::npos);  // the CSP forbids loads too
  EXPECT_NE(html.find("<script type=\"application/json\" id=\"qcrash-data\">"), std::string::npos);

  const std::string chromium = Chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (ci/setup.sh installs it)";
  const RunResult dom =
      dir.Run(chromium + " --headless --no-sandbox --disable-gpu --dump-dom file://" +
              dir.File("r.html") + " 2>/dev/null");
  ASSERT_EQ(dom.exit_code, 0) << dom.err;
  const std::string& d = dom.out;
  EXPECT_NE(d.find("data-rendered=\"yes\""), std::string::npos) << "the script did not finish";
  EXPECT_NE(d.find("id=\"violation-0\""), std::string::npos);
  EXPECT_NE(d.find("Violation #0: I1 during"), std::string::npos);
  EXPECT_NE(d.find("qcrash replay R.json#0"), std::string::npos);
  for (const char* zone : {"L1 table", "L2 table", "refcount block", "data"})
    EXPECT_NE(d.find(zone), std::string::npos) << zone;
  EXPECT_NE(d.find("id=\"zones\""), std::string::npos);
  EXPECT_NE(d.find("id=\"points-summary\""), std::string::npos);
  EXPECT_NE(d.find("Crash points by worst verdict"), std::string::npos);
  EXPECT_NE(d.find("id=\"points-lane\""), std::string::npos);
  EXPECT_NE(d.find("class=\"zone-bar\""), std::string::npos);
  EXPECT_NE(d.find("class=\"vmark\""), std::string::npos);
}

TEST(ReportPage, DataCannotCloseItsScriptBlock) {
  ScratchDir dir;
  json r = ExploreDefault(dir);
  const std::string hostile = "</script><script>document.title='pwned'</script><!--";
  r["violations"][0]["message"] = hostile;
  WriteFileBytes(dir.File("H.json"), r.dump());
  const RunResult made = dir.Qcrash("report H.json -o h.html");
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string html = ReadFileBytes(dir.File("h.html"));
  EXPECT_EQ(html.find(hostile), std::string::npos);
  const std::string chromium = Chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed";
  const RunResult dom =
      dir.Run(chromium + " --headless --no-sandbox --disable-gpu --dump-dom file://" +
              dir.File("h.html") + " 2>/dev/null");
  EXPECT_NE(dom.out.find("data-rendered=\"yes\""), std::string::npos);
  // The hostile script did not run: the title is the page's own.
  EXPECT_NE(dom.out.find("<title>qcrash report</title>"), std::string::npos);
  // The message shows as text.
  EXPECT_NE(dom.out.find("&lt;/script&gt;&lt;script&gt;document.title"), std::string::npos);
}

TEST(ReportPage, BadInputIsOneLineAndWritesNothing) {
  ScratchDir dir;
  WriteFileBytes(dir.File("garbage.json"), "{\"verdicts\": [1, 2");
  WriteFileBytes(dir.File("suite.json"), "{\"cells\": []}");
  struct Case {
    std::string args;
    std::string expect;  // in the one error line
  };
  for (const Case& c : {Case{"report missing.json -o out.html", "missing.json"},
                        Case{"report garbage.json -o out.html", "garbage.json: "},
                        Case{"report suite.json -o out.html", "suite.json: "},
                        Case{"report suite.json", "-o REPORT.html is required"},
                        Case{"report -o out.html", "expecting one REPORT.json"}}) {
    const RunResult run = dir.Qcrash(c.args);
    EXPECT_NE(run.exit_code, 0) << c.args;
    EXPECT_NE(run.err.find(c.expect), std::string::npos) << c.args << ": " << run.err;
    EXPECT_FALSE(std::filesystem::exists(dir.File("out.html"))) << c.args;
    EXPECT_FALSE(std::filesystem::exists(dir.File("out.html.tmp"))) << c.args;
  }
  const RunResult garbage = dir.Qcrash("report garbage.json -o out.html");
  EXPECT_EQ(std::count(garbage.err.begin(), garbage.err.end(), '\n'), 1) << garbage.err;
  // Options may follow the positional argument, as qemu-img's getopt permutes.
  WriteFileBytes(dir.File("min.json"), "{\"verdicts\": {}, \"violations\": []}");
  EXPECT_EQ(dir.Qcrash("report min.json -o min.html").exit_code, 0);
  EXPECT_EQ(dir.Qcrash("report -o min2.html min.json").exit_code, 0);
  EXPECT_TRUE(std::filesystem::exists(dir.File("min2.html")));
}

}  // namespace
}  // namespace qcrash::interop
