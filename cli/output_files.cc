#include "output_files.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "xattn/error.h"
#include "xattn/npy.h"

namespace xattn::cli {
namespace {

namespace fs = std::filesystem;

std::string staging_path(const std::string& path) {
  return path + ".xattn-" + std::to_string(::getpid()) + ".part";
}

void refuse_directory(const std::string& option, const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error(option + ": " + path + " is a directory");
}

[[noreturn]] void cannot_write(const std::string& option, const std::string& path) {
  throw Error(option + ": " + path + ": cannot write: " + std::strerror(errno));
}

}  // namespace

void check_output_paths(const OutputPaths& paths) {
  const std::pair<const char*, const std::string*> named[] = {
      {"-o", &paths.out}, {"--lse", &paths.lse}, {"--weights", &paths.weights}};
  for (size_t i = 0; i < std::size(named); ++i) {
    const std::string& p = *named[i].second;
    if (p.empty()) continue;
    refuse_directory(named[i].first, p);
    std::error_code ec;
    for (size_t j = 0; j < i; ++j) {
      const std::string& q = *named[j].second;
      // Same spelling or same existing file: the second write would silently replace the first.
      if (!q.empty() && (p == q || fs::equivalent(p, q, ec))) {
        throw Error(std::string(named[i].first) + ": " + p + " is also given to " + named[j].first);
      }
    }
  }
}

void write_outputs(const std::vector<OutputFile>& files) {
  std::vector<std::string> staged;
  try {
    for (const OutputFile& f : files) {
      const std::string tmp = staging_path(f.path);
      try {
        write_npy(tmp, f.dtype, f.shape, f.data);
      } catch (const Error& e) {
        // Report the user's path, not the staging name.
        std::string msg = e.what();
        if (msg.rfind(tmp, 0) == 0) msg = f.path + msg.substr(tmp.size());
        throw Error(f.option + ": " + msg);
      }
      staged.push_back(tmp);
    }
  } catch (...) {
    for (const std::string& s : staged) std::remove(s.c_str());
    throw;
  }
  // Renames within one directory of files we just created there; failure here is very unlikely
  // (the target turned into a directory meanwhile), and still reported.
  for (size_t i = 0; i < files.size(); ++i) {
    if (std::rename(staged[i].c_str(), files[i].path.c_str()) != 0) {
      const int saved = errno;
      for (size_t j = i; j < staged.size(); ++j) std::remove(staged[j].c_str());
      errno = saved;
      cannot_write(files[i].option, files[i].path);
    }
  }
}

void check_writable(const std::string& option, const std::string& path) {
  refuse_directory(option, path);
  const std::string tmp = staging_path(path);
  std::FILE* probe = std::fopen(tmp.c_str(), "wx");  // x: never truncate someone else's file
  if (probe == nullptr) cannot_write(option, path);
  std::fclose(probe);
  std::remove(tmp.c_str());
}

void write_text_output(const std::string& option, const std::string& path, const std::string& text) {
  refuse_directory(option, path);
  const std::string tmp = staging_path(path);
  std::FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) cannot_write(option, path);
  // fclose flushes, so its result covers every byte (a full disk shows up there at the latest).
  const bool written = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !written || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    std::remove(tmp.c_str());
    errno = saved;
    cannot_write(option, path);
  }
}

}  // namespace xattn::cli
