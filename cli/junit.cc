#include "cli/junit.h"

#include <cstdio>
#include <fstream>

namespace qcrash::cli {
namespace {

// Attribute and text escaping; control bytes other than tab and newline are
// not allowed in XML 1.0 at all, so they become '?' (messages may quote
// bytes read from an image).
std::string Escape(const std::string& text, bool attribute = true) {
  std::string out;
  for (unsigned char c : text) {
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
      case '\n':
        out += attribute ? "&#10;" : "\n";
        break;
      case '\t':
        out += "&#9;";
        break;
      default:
        out += c < 0x20 ? '?' : static_cast<char>(c);
    }
  }
  return out;
}

std::string String(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : "";
}

}  // namespace

JunitCase JunitCaseFromReport(const nlohmann::json& report, const std::string& report_path) {
  JunitCase c;
  c.classname = String(report, "workload");
  c.name = String(report, "policy") + "/" + String(report, "enumerator");
  c.seconds = report.value("elapsed_seconds", 0.0);
  const std::string workload_error = String(report, "workload_error");
  const uint64_t violating = report.value("violating_states", uint64_t{0});
  if (violating == 0 && workload_error.empty()) return c;
  c.failed = true;
  if (!workload_error.empty()) {
    c.message = "workload stopped: " + workload_error;
    c.text = c.message + "\n";
  }
  const nlohmann::json empty = nlohmann::json::array();
  const nlohmann::json& violations = report.contains("violations") ? report["violations"] : empty;
  for (size_t i = 0; i < violations.size(); ++i) {
    const nlohmann::json& v = violations[i];
    const std::string line =
        String(v, "invariant") + " at " + String(v, "state_id") + ": " + String(v, "message");
    if (c.message.empty()) c.message = line;
    const std::string reproducer = String(v, "reproducer");
    c.text += String(v, "invariant") + " during " + String(v, "op_class") + " at state " +
              String(v, "state_id") + ": " + String(v, "message") + "\n";
    if (String(report, "engine") == "log") {
      c.text += "  crash image: " + reproducer + "/image.qcow2\n";  // no workload to replay
    } else if (!report_path.empty()) {
      c.text += "  replay: qcrash replay " + report_path + "#" + std::to_string(i) + "\n";
    } else if (!reproducer.empty()) {
      c.text += "  replay: qcrash replay " + reproducer + "\n";
    }
  }
  if (c.message.empty()) c.message = std::to_string(violating) + " violating states";
  c.text += std::to_string(violating) + " violating states of " +
            std::to_string(report.value("states_checked", uint64_t{0})) + " checked\n";
  return c;
}

std::vector<JunitCase> JunitCasesFromSuite(const nlohmann::json& suite) {
  std::vector<JunitCase> cases;
  for (const nlohmann::json& cell : suite["cells"]) {
    JunitCase c;
    c.classname = String(cell, "workload");
    c.name = String(cell, "policy") + "/" + String(cell, "enumerator");
    c.seconds = cell.value("elapsed_seconds", 0.0);
    for (const nlohmann::json& f : suite["failures"]) {
      if (String(f, "workload") != c.classname || String(f, "policy") != String(cell, "policy") ||
          String(f, "enumerator") != String(cell, "enumerator"))
        continue;
      c.failed = true;
      if (f.contains("invariant")) {
        c.message =
            String(f, "invariant") + " at " + String(f, "state_id") + ": " + String(f, "message");
        c.text = String(f, "invariant") + " at state " + String(f, "state_id") + ": " +
                 String(f, "message") + "\n";
      } else {
        c.message = String(f, "failure");
        c.text = c.message + "\n";
      }
      if (f.contains("reproducer"))
        c.text += "  replay: qcrash replay " + String(f, "reproducer") + "\n";
      c.text += "  rerun: " + String(f, "command") + "\n";
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

Status WriteJunit(const std::string& path, const std::string& suite_name,
                  const std::vector<JunitCase>& cases) {
  size_t failures = 0;
  double seconds = 0;
  for (const JunitCase& c : cases) {
    failures += c.failed;
    seconds += c.seconds;
  }
  std::string xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  char counts[160];
  std::snprintf(counts, sizeof counts, "tests=\"%zu\" failures=\"%zu\" errors=\"0\" time=\"%.3f\"",
                cases.size(), failures, seconds);
  xml += "<testsuites " + std::string(counts) + ">\n";
  xml += "  <testsuite name=\"" + Escape(suite_name) + "\" " + counts + ">\n";
  for (const JunitCase& c : cases) {
    char time[40];
    std::snprintf(time, sizeof time, "%.3f", c.seconds);
    xml += "    <testcase classname=\"" + Escape(c.classname) + "\" name=\"" + Escape(c.name) +
           "\" time=\"" + time + "\"";
    if (!c.failed) {
      xml += "/>\n";
      continue;
    }
    xml += ">\n      <failure message=\"" + Escape(c.message) + "\" type=\"violation\">" +
           Escape(c.text, false) + "</failure>\n    </testcase>\n";
  }
  xml += "  </testsuite>\n</testsuites>\n";
  std::ofstream out(path, std::ios::trunc | std::ios::binary);
  out << xml;
  out.close();
  if (!out) return Status::IoError("cannot write the JUnit XML");
  return Status::Ok();
}

}  // namespace qcrash::cli
