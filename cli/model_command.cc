// Reads the checkpoint's kind, loads the matching C++ model, maps named .npy files to its
// inputs, runs it and writes its outputs all or nothing. No model math lives here.

#include "model_command.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <utility>

#include "output_files.h"
#include "run_params.h"
#include "text_values.h"
#include "xattn/error.h"
#include "xattn/models/ccnet.h"
#include "xattn/models/crossformer.h"
#include "xattn/models/crossvit.h"
#include "xattn/models/parameters.h"
#include "xattn/models/perceiver_io.h"
#include "xattn/models/speech.h"
#include "xattn/runtime.h"

namespace xattn::cli {
namespace {

using models::Tensor;

struct Inputs {
  std::map<std::string, TensorView> arrays;
  std::vector<int64_t> lens;  // --input-lens
};

// What the command knows of each kind: its named inputs and outputs, and how to run it.
struct Kind {
  std::vector<std::string> inputs, outputs;
  std::string help;  // the shapes, for the description
  bool takes_lens = false;
  std::function<std::vector<Tensor>(const std::string& path, const Inputs&)> run;
};

// A CrossFormer stage's token map given as x [B, H, W, dim]: run(tokens [B, H·W, dim], H, W)
// and its result [B, H·W, dim] returned as [B, H, W, dim].
template <typename Run>
std::vector<Tensor> on_token_map(const TensorView& x, const Run& run) {
  if (x.rank() != 4) throw Error("--in x: expected a 4-D [B, H, W, dim] token map");
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  Tensor map({B, H, W, C});
  nn::copy_into(x, map, "x");
  const TensorView tokens{map.data(), DType::kF32, Layout::contiguous({B, H * W, C})};
  const Tensor y = run(tokens, H, W);
  Tensor out({B, H, W, y.size(2)});
  std::copy_n(y.data(), y.numel(), out.data());
  return {std::move(out)};
}

const std::map<std::string, Kind>& kinds() {
  static const std::map<std::string, Kind> table = {
      {"PerceiverIO",
       {{"inputs", "queries"}, {"outputs"},
        "inputs [B, M, input_dim], queries [B, O, query_dim] -> outputs [B, O, output_dim]",
        true,
        [](const std::string& path, const Inputs& in) {
          const auto model = models::PerceiverIO::load(path);
          return std::vector<Tensor>{
              model.forward(in.arrays.at("inputs"), in.arrays.at("queries"), in.lens)};
        }}},
      {"CrissCrossAttention",
       {{"x"}, {"y"}, "x [B, in_channels, H, W] -> y shaped alike", false,
        [](const std::string& path, const Inputs& in) {
          return std::vector<Tensor>{
              models::CrissCrossAttention::load(path).forward(in.arrays.at("x"))};
        }}},
      {"CrossViT",
       {{"images"}, {"logits"}, "images [B, in_chans, H, W] -> logits [B, num_classes]", false,
        [](const std::string& path, const Inputs& in) {
          return std::vector<Tensor>{models::CrossViT::load(path).forward(in.arrays.at("images"))};
        }}},
      {"CrossViTCrossAttention",
       {{"x"}, {"out"}, "x [B, N, dim] -> out [B, 1, dim]", false,
        [](const std::string& path, const Inputs& in) {
          return std::vector<Tensor>{
              models::CrossViTCrossAttention::load(path).forward(in.arrays.at("x"))};
        }}},
      {"CrossViTFusion",
       {{"x0", "x1"}, {"z0", "z1"},
        "x0 [B, 1+N0, dims[0]], x1 [B, 1+N1, dims[1]] -> z0, z1 shaped alike", false,
        [](const std::string& path, const Inputs& in) {
          const auto model = models::CrossViTFusion::load(path);
          models::Branches xs;
          for (int d = 0; d < 2; ++d) {
            const TensorView x = in.arrays.at("x" + std::to_string(d));
            if (x.rank() != 3)
              throw Error("--in x" + std::to_string(d) + ": expected a 3-D [B, 1+N, dim] array");
            xs[d] = Tensor({x.size(0), x.size(1), x.size(2)});
            nn::copy_into(x, xs[d], "x" + std::to_string(d));
          }
          models::Branches zs = model.forward(xs);
          return std::vector<Tensor>{std::move(zs[0]), std::move(zs[1])};
        }}},
      {"CrossFormer",
       {{"images"}, {"logits"}, "images [B, in_chans, img_size] -> logits [B, num_classes]", false,
        [](const std::string& path, const Inputs& in) {
          return std::vector<Tensor>{
              models::CrossFormer::load(path).forward(in.arrays.at("images"))};
        }}},
      {"CrossFormerBlock",
       {{"x"}, {"out"}, "x [B, H, W, dim] (a token map) -> out shaped alike", false,
        [](const std::string& path, const Inputs& in) {
          const auto model = models::CrossFormerBlock::load(path);
          return on_token_map(in.arrays.at("x"), [&](const TensorView& t, int64_t H, int64_t W) {
            return model.forward(t, H, W);
          });
        }}},
      {"LSDA",
       {{"x"}, {"out"}, "x [B, H, W, dim] (a token map) -> out shaped alike", false,
        [](const std::string& path, const Inputs& in) {
          const auto model = models::LSDA::load(path);
          return on_token_map(in.arrays.at("x"), [&](const TensorView& t, int64_t H, int64_t W) {
            return model.forward(t, H, W);
          });
        }}},
      {"SpeechRecognizer",
       {{"features", "tokens"}, {"logits"},
        "features [T, n_mels] (log-mel), tokens [L] (ids, SOT first) -> logits [L, vocab]", false,
        [](const std::string& path, const Inputs& in) {
          const auto model = models::SpeechRecognizer::load(path);
          const TensorView t = in.arrays.at("tokens");
          if (t.rank() != 1) throw Error("--in tokens: expected a 1-D array of token ids");
          Tensor ids({t.size(0)});
          nn::copy_into(t, ids, "tokens");
          std::vector<int64_t> tokens;
          for (int64_t i = 0; i < ids.numel(); ++i) {
            const float id = ids.data()[i];
            if (id != std::floor(id)) throw Error("--in tokens: ids must be whole numbers");
            tokens.push_back(static_cast<int64_t>(id));
          }
          return std::vector<Tensor>{model.logits(model.encode(in.arrays.at("features")), tokens)};
        }}},
      {"CrossScaleEmbedding",
       {{"x"}, {"out"}, "x [B, in_channels, H, W] -> out [B, H'·W', dim]", false,
        [](const std::string& path, const Inputs& in) {
          return std::vector<Tensor>{
              models::CrossScaleEmbedding::load(path).forward(in.arrays.at("x"))};
        }}},
  };
  return table;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// "NAME=PATH" (or "PATH" when `names` has one entry) -> (name, path).
std::pair<std::string, std::string> named_path(const char* option, const std::string& text,
                                               const std::vector<std::string>& names) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos) {
    if (names.size() == 1) return {names[0], text};
    throw Error(std::string(option) + ": expected NAME=FILE.npy with NAME one of " +
                joined(names) + ", got '" + text + "'");
  }
  std::string name = text.substr(0, eq), path = text.substr(eq + 1);
  if (std::find(names.begin(), names.end(), name) == names.end())
    throw Error(std::string(option) + ": '" + name + "' is not one of this model's names (" +
                joined(names) + ")");
  if (path.empty()) throw Error(std::string(option) + " " + name + ": the file name is empty");
  return {name, path};
}

}  // namespace

CLI::App* add_model_command(CLI::App& app, ModelOptions& o) {
  CLI::App* cmd = app.add_subcommand(
      "model", "Run a model checkpoint saved by xattn.models.save_checkpoint (PerceiverIO, "
               "CrossViT, CrossViTFusion, CrossViTCrossAttention, CrissCrossAttention, "
               "CrossFormer, CrossFormerBlock, LSDA, CrossScaleEmbedding, SpeechRecognizer) on "
               ".npy inputs.\n"
               "Without --in, describes the checkpoint: its kind, configuration, inputs and "
               "outputs.");
  cmd->add_option("checkpoint", o.checkpoint, "the .safetensors checkpoint")
      ->required()
      ->type_name("MODEL.safetensors");
  cmd->add_option("--in", o.inputs, "an input array (float32 or float16); NAME may be left out "
                                    "when the model has one input")
      ->type_name("NAME=FILE.npy");
  cmd->add_option("-o,--out", o.outputs, "where an output goes (float32); every output must be "
                                         "given one")
      ->type_name("NAME=FILE.npy");
  cmd->add_option("--input-lens", o.input_lens,
                  "PerceiverIO: the true length of each batch row's input (padding after it has "
                  "no effect)")
      ->type_name("N,N,...");
  cmd->add_option("--threads", o.threads, "threads (default: all)")->type_name("N");
  return cmd;
}

void model_command(const ModelOptions& o, std::ostream& out) {
  const models::Checkpoint checkpoint(o.checkpoint);
  const auto found = kinds().find(checkpoint.kind);
  if (found == kinds().end())
    throw Error(o.checkpoint + ": holds a '" + checkpoint.kind + "', which this command cannot run");
  const Kind& kind = found->second;
  if (o.inputs.empty() && o.outputs.empty()) {
    int64_t parameters = 0;
    for (const std::string& name : checkpoint.file.names()) {
      const TensorView t = checkpoint.file.tensor(name);
      int64_t n = 1;
      for (int d = 0; d < t.rank(); ++d) n *= t.size(d);
      parameters += n;
    }
    out << checkpoint.kind << ": " << parameters << " parameters\n"
        << "config: " << checkpoint.config_json << "\n"
        << "run: " << kind.help << "\n"
        << "  --in " << joined(kind.inputs) << " (NAME=FILE.npy), -o " << joined(kind.outputs)
        << (kind.takes_lens ? ", --input-lens N,N,..." : "") << "\n";
    return;
  }
  if (!o.input_lens.empty() && !kind.takes_lens)
    throw Error("--input-lens: a " + checkpoint.kind + " takes no input lengths");
  if (!o.threads.empty()) set_default_num_threads(parse_threads(o.threads));

  std::map<std::string, std::string> output_paths;
  for (const std::string& text : o.outputs) {
    const auto [name, path] = named_path("-o", text, kind.outputs);
    if (!output_paths.emplace(name, path).second) throw Error("-o: " + name + " is given twice");
  }
  for (const std::string& name : kind.outputs)
    if (!output_paths.contains(name)) throw Error("-o: give " + name + "=FILE.npy");
  for (const auto& [name, path] : output_paths) check_writable("-o " + name, path);

  std::map<std::string, NpyArray> arrays;
  Inputs inputs;
  for (const std::string& text : o.inputs) {
    const auto [name, path] = named_path("--in", text, kind.inputs);
    if (arrays.contains(name)) throw Error("--in: " + name + " is given twice");
    arrays.emplace(name, load_npy("--in " + name, path));
    inputs.arrays[name] = arrays.at(name).view();
  }
  for (const std::string& name : kind.inputs)
    if (!inputs.arrays.contains(name)) throw Error("--in: give " + name + "=FILE.npy");
  if (!o.input_lens.empty()) inputs.lens = parse_int_list("--input-lens", o.input_lens);

  const auto start = std::chrono::steady_clock::now();
  const std::vector<Tensor> results = kind.run(o.checkpoint, inputs);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  std::vector<OutputFile> files;
  for (size_t i = 0; i < results.size(); ++i) {
    const std::string& name = kind.outputs[i];
    files.push_back({"-o " + name, output_paths.at(name), DType::kF32, results[i].shape(),
                     results[i].data()});
  }
  write_outputs(files);
  out << checkpoint.kind << ": loaded and ran in " << ms << " ms\n";
}

}  // namespace xattn::cli
