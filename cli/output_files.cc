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

}  // namespace

void check_output_paths(const OutputPaths& paths) {
  const std::pair<const char*, const std::string*> named[] = {
      {"-o", &paths.out}, {"--lse", &paths.lse}, {"--weights", &paths.weights}};
  for (size_t i = 0; i < std::size(named); ++i) {
    const std::string& p = *named[i].second;
    if (p.empty()) continue;
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
      throw Error(std::string(named[i].first) + ": " + p + " is a directory");
    }
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
      const std::string reason = std::strerror(errno);
      for (size_t j = i; j < staged.size(); ++j) std::remove(staged[j].c_str());
      throw Error(files[i].option + ": " + files[i].path + ": cannot write: " + reason);
    }
  }
}

}  // namespace xattn::cli
