// POSIX file helpers shared by the .npy and safetensors readers and writers.

#include "io/file_io.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "xattn/error.h"

namespace xattn::io {

void fail(const std::string& path, const std::string& problem) {
  throw Error(path + ": " + problem);
}

std::string errno_text() { return std::strerror(errno); }

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

size_t read_fully(int fd, void* dst, size_t n, const std::string& path) {
  auto* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::read(fd, p + done, n - done);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EINTR) continue;
      fail(path, "read error: " + errno_text());
    }
    done += static_cast<size_t>(r);
  }
  return done;
}

void write_fully(int fd, const void* src, size_t n, const std::string& path) {
  const auto* p = static_cast<const char*>(src);
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, p + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, "cannot write: " + errno_text());
    }
    done += static_cast<size_t>(w);
  }
}

void write_atomically(const std::string& path, const std::function<void(int fd)>& write) {
  static std::atomic<unsigned> counter{0};
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(counter.fetch_add(1));
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
  if (fd.get() < 0) fail(path, "cannot write: " + errno_text());
  try {
    write(fd.get());
    if (::close(fd.release()) != 0) fail(path, "cannot write: " + errno_text());
    if (::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "cannot write: " + errno_text());
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace xattn::io
