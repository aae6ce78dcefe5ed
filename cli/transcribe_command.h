#pragma once
// `xattn transcribe FILE [--beams N] [--model PATH] [--threads N]`: the speech recogniser on an
// audio file: the transcript on stdout, then where the time went.

#include <ostream>
#include <string>

namespace CLI {
class App;
}

namespace xattn::cli {

struct TranscribeOptions {
  std::string audio, model, threads;
  int64_t beams = 1;
  int64_t max_tokens = 200;
};

CLI::App* add_transcribe_command(CLI::App& app, TranscribeOptions& options);

// Throws xattn::Error naming the file or option for bad input.
void transcribe_command(const TranscribeOptions& options, std::ostream& out);

}  // namespace xattn::cli
