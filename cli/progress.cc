#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace qcrash::cli {

void ProgressLine::Update(double percent) {
  if (!enabled_ || (printed_ && percent < last_ + 1.0 && percent < 100)) return;
  if (percent > 100) percent = 100;
  std::fprintf(stderr, "    (%.2f/100%%)\r", percent);
  std::fflush(stderr);
  printed_ = true;
  last_ = percent;
}

void ProgressLine::Finish() {
  if (!enabled_ || !printed_) return;
  if (last_ < 100) std::fprintf(stderr, "    (100.00/100%%)\r");
  std::fprintf(stderr, "\n");
  enabled_ = false;
}

bool ProgressWanted(bool asked, bool quiet) {
  return !quiet && (asked || ::isatty(STDERR_FILENO) != 0);
}

}  // namespace qcrash::cli
