#pragma once
// The POSIX file handling both file formats share: errors that name the file, a descriptor that
// closes itself, complete reads and writes, and the atomic replace every writer uses.

#include <cstddef>
#include <functional>
#include <string>

namespace xattn::io {

// Throws xattn::Error "<path>: <problem>".
[[noreturn]] void fail(const std::string& path, const std::string& problem);
// strerror(errno), for messages.
std::string errno_text();

// Closes a POSIX file descriptor on every exit path.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Reads exactly n bytes unless the file ends first; returns how many were read.
size_t read_fully(int fd, void* dst, size_t n, const std::string& path);
void write_fully(int fd, const void* src, size_t n, const std::string& path);

// Writes `path` through `write`, which fills a new temporary file beside it (same file system,
// unique name) that then replaces `path` by rename: `path` is either untouched or complete, and
// on any failure the temporary file is removed.
void write_atomically(const std::string& path, const std::function<void(int fd)>& write);

}  // namespace xattn::io
