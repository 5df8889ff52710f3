// qemu-img's progress line, "    (12.34/100%)\r", for the long commands
// (convert, check of a large image). On stderr, where it cannot mix with a
// command's output (qemu-img writes it on stdout): shown with -p, or by
// itself on a terminal; never by itself in a log or a pipe.
#pragma once

namespace qcrash::cli {

class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled) {}
  ~ProgressLine() { Finish(); }
  ProgressLine(const ProgressLine&) = delete;
  ProgressLine& operator=(const ProgressLine&) = delete;

  // Prints a line when the percent moved by 1 or more since the last one
  // (as qemu-img's min_skip), so a log gets at most about 100 of them.
  void Update(double percent);
  // 100% and the newline, once, when anything was printed.
  void Finish();

 private:
  bool enabled_;
  bool printed_ = false;
  double last_ = -1;
};

// -p asks for it, and a terminal on stderr does by itself; -q silences
// both (qemu-img's -q wins over its -p too).
bool ProgressWanted(bool asked, bool quiet);

}  // namespace qcrash::cli
