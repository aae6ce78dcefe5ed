#pragma once
// `xattn model CHECKPOINT [--in NAME=FILE.npy]... [-o NAME=FILE.npy]...`: runs a checkpoint that
// xattn.models.save_checkpoint wrote (Perceiver IO, CrossViT and its parts) on .npy inputs with
// the C++ models; without inputs, describes the checkpoint.

#include <ostream>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace xattn::cli {

struct ModelOptions {
  std::string checkpoint;
  std::vector<std::string> inputs;   // NAME=PATH, or PATH for a model with one input
  std::vector<std::string> outputs;  // NAME=PATH, or PATH for a model with one output
  std::string input_lens, threads;
};

CLI::App* add_model_command(CLI::App& app, ModelOptions& options);

// Throws xattn::Error naming the option or file for bad input; writes no file then.
void model_command(const ModelOptions& options, std::ostream& out);

}  // namespace xattn::cli
