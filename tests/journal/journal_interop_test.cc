// Proves the journal's feature bits work with QEMU's tools: qemu-img refuses
// an image whose journal is dirty (incompatible bit 63), and reads an image
// whose journal is clean (the extension is unknown to it, and it is kept).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "engine/file_device.h"
#include "engine/image.h"

namespace qcrash::engine {
namespace {

int RunCommand(const std::string& command, std::string* output) {
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[512];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) output->append(buffer);
  return pclose(pipe);
}

std::string MakeImage(bool close) {
  const std::string path = ::testing::TempDir() + "journal_interop_" + std::to_string(getpid()) +
                           (close ? "_clean" : "_dirty") + ".qcow2";
  auto device = FileDevice::Open(path, FileDevice::Mode::kCreate);
  EXPECT_TRUE(device.ok());
  CreateOptions c;
  c.size_bytes = 4 << 20;
  OpenOptions o;
  o.policy = OrderingPolicy::kJournal;
  auto image = Image::Create(**device, c, o);
  EXPECT_TRUE(image.ok()) << image.status().ToString();
  const std::vector<uint8_t> data(65536, 0x42);
  EXPECT_TRUE((*image)->Write(0, data).ok());
  EXPECT_TRUE((*image)->Flush().ok());
  if (close) {
    EXPECT_TRUE((*image)->Close().ok());
  }
  return path;  // not closed: committed transactions stay unsynced (a crash)
}

TEST(JournalInterop, QemuImgRefusesADirtyJournal) {
  if (system("command -v qemu-img > /dev/null") != 0) GTEST_SKIP() << "qemu-img not installed";
  const std::string path = MakeImage(false);
  std::string out;
  EXPECT_NE(RunCommand("qemu-img info " + path, &out), 0) << out;
  EXPECT_NE(out.find("nknown incompatible feature"), std::string::npos) << out;
  unlink(path.c_str());
}

TEST(JournalInterop, QemuImgReadsACleanJournal) {
  if (system("command -v qemu-img > /dev/null") != 0) GTEST_SKIP() << "qemu-img not installed";
  const std::string path = MakeImage(true);
  std::string out;
  EXPECT_EQ(RunCommand("qemu-img info " + path, &out), 0) << out;
  out.clear();
  const std::string raw = path + ".raw";
  EXPECT_EQ(RunCommand("qemu-img convert -O raw " + path + " " + raw, &out), 0) << out;
  FILE* f = fopen(raw.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::vector<uint8_t> bytes(65536);
  EXPECT_EQ(fread(bytes.data(), 1, bytes.size(), f), bytes.size());
  fclose(f);
  EXPECT_EQ(bytes, std::vector<uint8_t>(65536, 0x42));
  out.clear();
  // qemu-img compare against itself through qemu-io: reads go through QEMU's qcow2 driver.
  EXPECT_EQ(RunCommand("qemu-io -r -c 'read -P 0x42 0 64k' " + path, &out), 0) << out;
  unlink(raw.c_str());
  unlink(path.c_str());
}

}  // namespace
}  // namespace qcrash::engine
