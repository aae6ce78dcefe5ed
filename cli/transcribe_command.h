#pragma once
// `xattn transcribe FILE [--beams N] [--model PATH] [--attention-map OUT.png] [--threads N]`: the
// speech recogniser on an audio file: the transcript on stdout, then where the time went, and
// optionally the picture of where each word was read from.

#include <ostream>
#include <string>

namespace CLI {
class App;
}

namespace xattn::cli {

struct TranscribeOptions {
  std::string audio, model, threads, attention_map;
  int64_t beams = 1;
  int64_t max_tokens = 200;
};

CLI::App* add_transcribe_command(CLI::App& app, TranscribeOptions& options);

// Throws xattn::Error naming the file or option for bad input.
void transcribe_command(const TranscribeOptions& options, std::ostream& out);

}  // namespace xattn::cli
