#pragma once
// Shared by the fuzz targets: an in-memory file the readers can open by path, and a failure
// that libFuzzer records as a crash, with a message.

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace xattn::fuzz {

// Prints the broken expectation and traps: libFuzzer saves the input as a crash.
[[noreturn]] inline void fail(const std::string& what) {
  std::fprintf(stderr, "FUZZ CHECK FAILED: %s\n", what.c_str());
  std::fflush(stderr);
  __builtin_trap();
}

inline void check(bool ok, const std::string& what) {
  if (!ok) fail(what);
}

// A memfd rewritten with each input; read_npy and SafetensorsFile open it through
// /proc/self/fd, as a regular file, without touching the disk.
class MemFile {
 public:
  MemFile() : fd_(::memfd_create("xattn-fuzz", MFD_CLOEXEC)) {
    if (fd_ < 0) fail("memfd_create failed");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;
  ~MemFile() { ::close(fd_); }

  const std::string& write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) fail("ftruncate failed");
    size_t done = 0;
    while (done < size) {
      const ssize_t w = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (w <= 0) fail("pwrite failed");
      done += static_cast<size_t>(w);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// A per-process scratch path for round trips through the writers (tmpfs when there is one).
inline std::string scratch_path(const char* suffix) {
  const char* dir = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  return std::string(dir) + "/xattn-fuzz-" + std::to_string(::getpid()) + suffix;
}

}  // namespace xattn::fuzz
