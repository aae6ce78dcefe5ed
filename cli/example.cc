// The embeddings are 8 hand-picked features, so the attention map can be read by eye:
//   0 determiner   1 feline   2 drinking   3 warmth   4 milk   5 partitive ("some")
//   6 end of sentence   7 a constant every word shares
// A word and its translation share their main feature, so each English query attends mostly to
// its French counterpart; the side features make the map less trivial ("milk" also looks at
// "du", the partitive article that goes with it; "the" at the article "du").

#include "example.h"

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "run_params.h"
#include "terminal_view.h"

namespace xattn::cli {
namespace {

constexpr int64_t kDim = 8;
constexpr int64_t kQueries = 5;
constexpr int64_t kKeys = 7;

const std::vector<std::string> kQueryTokens = {"the", "cat", "drinks", "warm", "milk"};
const std::vector<std::string> kKeyTokens = {"le", "chat", "boit", "du", "lait", "chaud", "."};

// clang-format off
constexpr float kQueryEmbeddings[kQueries][kDim] = {
    {3.0f, 0.3f, 0.0f, 0.0f, 0.0f, 0.5f, 0.0f, 0.5f},  // the
    {0.3f, 3.0f, 0.3f, 0.0f, 0.0f, 0.0f, 0.0f, 0.5f},  // cat
    {0.0f, 0.3f, 3.0f, 0.0f, 0.8f, 0.0f, 0.0f, 0.5f},  // drinks
    {0.0f, 0.0f, 0.0f, 3.0f, 0.5f, 0.0f, 0.0f, 0.5f},  // warm
    {0.0f, 0.0f, 0.5f, 0.3f, 3.0f, 1.2f, 0.0f, 0.5f},  // milk
};
// Keys double as values: the output row of a query is a blend of the French words it reads.
constexpr float kKeyEmbeddings[kKeys][kDim] = {
    {3.0f, 0.2f, 0.0f, 0.0f, 0.0f, 0.3f, 0.0f, 0.5f},  // le
    {0.3f, 3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.5f},  // chat
    {0.0f, 0.0f, 3.0f, 0.0f, 0.5f, 0.0f, 0.0f, 0.5f},  // boit
    {1.2f, 0.0f, 0.0f, 0.0f, 0.8f, 2.0f, 0.0f, 0.5f},  // du
    {0.0f, 0.0f, 0.5f, 0.3f, 3.0f, 0.5f, 0.0f, 0.5f},  // lait
    {0.0f, 0.0f, 0.0f, 3.0f, 0.3f, 0.0f, 0.0f, 0.5f},  // chaud
    {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f, 0.5f},  // .
};
// clang-format on

std::string join(const std::vector<std::string>& words) {
  std::string s;
  for (const std::string& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

std::string number(float x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", static_cast<double>(x));
  return buf;
}

std::string describe(const AttentionParams& p) {
  std::string s = "scale " + number(p.scale.value_or(1.0f / std::sqrt(static_cast<float>(kDim))));
  if (p.softcap > 0) s += ", softcap " + number(p.softcap);
  if (p.causal) s += std::string(", causal ") + (p.align == CausalAlign::kTopLeft ? "top_left" : "bottom_right");
  if (p.window.left >= 0 || p.window.right >= 0) {
    s += ", window " + std::to_string(p.window.left) + "," + std::to_string(p.window.right);
  }
  if (p.mask.present()) s += ", mask";
  if (!p.kv_lens.empty()) s += ", kv-lens " + std::to_string(p.kv_lens[0]);
  if (!p.q_lens.empty()) s += ", q-lens " + std::to_string(p.q_lens[0]);
  return s;
}

}  // namespace

void run_example(const AttentionParams& params, const OutputPaths& outputs, std::ostream& os) {
  check_output_paths(outputs);
  const TensorView q{kQueryEmbeddings, DType::kF32, Layout::contiguous({1, 1, kQueries, kDim})};
  const TensorView kv{kKeyEmbeddings, DType::kF32, Layout::contiguous({1, 1, kKeys, kDim})};

  std::vector<float> out(kQueries * kDim), lse(kQueries), weights(kQueries * kKeys);
  const AttentionOutputs outs{view(out.data(), {1, 1, kQueries, kDim}), view(lse.data(), {1, 1, kQueries}),
                              view(weights.data(), {1, 1, kQueries, kKeys})};
  call_attention(q, kv, kv, params, outs);

  std::vector<OutputFile> files;
  if (!outputs.out.empty()) files.push_back({"-o", outputs.out, DType::kF32, {1, 1, kQueries, kDim}, out.data()});
  if (!outputs.lse.empty()) files.push_back({"--lse", outputs.lse, DType::kF32, {1, 1, kQueries}, lse.data()});
  if (!outputs.weights.empty()) {
    files.push_back({"--weights", outputs.weights, DType::kF32, {1, 1, kQueries, kKeys}, weights.data()});
  }
  write_outputs(files);

  std::vector<std::string> features;
  for (int64_t d = 0; d < kDim; ++d) {
    // Appending (rather than "d" + to_string) dodges a GCC 12 -Wrestrict false positive at -O3.
    features.emplace_back("d");
    features.back() += std::to_string(d);
  }
  os << "Built-in example: English queries attend to French keys/values (D = " << kDim << ", "
     << describe(params) << ")\n"
     << "  queries (" << kQueries << "): " << join(kQueryTokens) << "\n"
     << "  keys    (" << kKeys << "): " << join(kKeyTokens) << "\n\n"
     << "output [" << kQueries << " x " << kDim << "], each row a blend of French embeddings:\n"
     << render_table(kQueryTokens, features, out, 2) << "\n"
     << "attention map (row: query, column: key; shade and number: probability):\n"
     << render_heatmap(kQueryTokens, kKeyTokens, weights);
}

}  // namespace xattn::cli
