// A plain main() for the gcc build: runs LLVMFuzzerTestOneInput over every
// file of the corpus paths given (directories are walked recursively), so
// ctest replays each seed and every regression input without libFuzzer.
//
//   <target>_replay [--expect-failure] [--time] PATH...
//
// --time prints each input's run time in microseconds on stdout (slowest
// inputs first), to find what makes a target slow.
//
// --expect-failure runs each input in a child process and succeeds only if
// every input makes the target fail (abort, signal or non-zero exit): the
// canary's committed crashes must keep crashing.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<std::string> CollectFiles(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const std::string& path : paths) {
    if (fs::is_directory(path)) {
      for (const auto& entry : fs::recursive_directory_iterator(path)) {
        if (entry.is_regular_file()) files.push_back(entry.path().string());
      }
    } else if (fs::is_regular_file(path)) {
      files.push_back(path);
    } else {
      std::fprintf(stderr, "replay: %s: no such file or directory\n", path.c_str());
      std::exit(2);
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void RunOne(const std::string& path) {
  const std::vector<uint8_t> bytes = ReadFile(path);
  // A copy in its own allocation, as libFuzzer gives, so overreads are caught.
  std::vector<uint8_t> input(bytes);
  (void)LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
}

// True when running `path` in a child process fails.
bool FailsInChild(const std::string& path) {
  std::fflush(nullptr);
  const pid_t child = fork();
  if (child == 0) {
    RunOne(path);
    _exit(0);
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child) return false;
  return !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace

int main(int argc, char** argv) {
  bool expect_failure = false;
  bool time = false;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--expect-failure") == 0) {
      expect_failure = true;
    } else if (std::strcmp(argv[i], "--time") == 0) {
      time = true;
    } else {
      paths.emplace_back(argv[i]);
    }
  }
  const std::vector<std::string> files = CollectFiles(paths);
  if (expect_failure && files.empty()) {
    std::fprintf(stderr, "replay: --expect-failure needs at least one input\n");
    return 1;
  }
  std::vector<std::pair<int64_t, std::string>> times;
  for (const std::string& file : files) {
    std::fprintf(stderr, "replay: %s\n", file.c_str());
    if (expect_failure && !FailsInChild(file)) {
      std::fprintf(stderr, "replay: %s did NOT fail, but it must (a canary gone blind)\n",
                   file.c_str());
      return 1;
    }
    if (expect_failure) continue;
    const auto start = std::chrono::steady_clock::now();
    RunOne(file);
    const auto elapsed = std::chrono::steady_clock::now() - start;
    if (time)
      times.emplace_back(std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count(),
                         file);
  }
  std::sort(times.rbegin(), times.rend());
  for (const auto& [us, file] : times)
    std::printf("%lld us %s\n", static_cast<long long>(us), file.c_str());
  std::fprintf(stderr, "replay: %zu inputs %s\n", files.size(),
               expect_failure ? "failed as expected" : "passed");
  return 0;
}
