#include "run_params.h"

#include <cctype>
#include <string_view>
#include <utility>

#include "text_values.h"
#include "xattn/error.h"

namespace xattn::cli {
namespace {

Window parse_window(const std::string& text) {
  std::vector<int64_t> lr;
  try {
    lr = parse_int_list("--window", text);
  } catch (const Error&) {
    lr.clear();  // reported below, with the expected form
  }
  if (lr.size() != 2 || lr[0] < -1 || lr[1] < -1) {
    throw Error("--window: expected L,R (two integers >= 0, or -1 for unbounded), got '" + text + "'");
  }
  return {lr[0], lr[1]};
}

CausalAlign parse_align(const std::string& text) {
  if (text == "top_left") return CausalAlign::kTopLeft;
  if (text == "bottom_right") return CausalAlign::kBottomRight;
  throw Error("--align: expected top_left or bottom_right, got '" + text + "'");
}

// The library names arguments as the C++ API spells them ("kv_lens[1] = 9 ...", "k: dim 3 ...");
// a command-line user should read the option they typed instead.
std::string with_option_names(const std::string& message) {
  static const std::pair<std::string_view, std::string_view> kNames[] = {
      {"q", "--q"},           {"k", "--k"},           {"v", "--v"},
      {"mask", "--mask"},     {"scale", "--scale"},   {"softcap", "--softcap"},
      {"window", "--window"}, {"align", "--align"},   {"kv_lens", "--kv-lens"},
      {"q_lens", "--q-lens"}, {"num_threads", "--threads"},
      {"out", "-o"},          {"lse", "--lse"},       {"weights", "--weights"}};
  size_t n = 0;
  while (n < message.size() && (std::isalnum(static_cast<unsigned char>(message[n])) || message[n] == '_')) ++n;
  const std::string_view name(message.data(), n);
  for (const auto& [api, option] : kNames) {
    if (name != api) continue;
    if (n < message.size() && message[n] == ':') return std::string(option) + message.substr(n);
    return std::string(option) + ": " + message;
  }
  return message;
}

}  // namespace

void parse_params(const RunOptions& o, ParsedParams& pp) {
  AttentionParams& p = pp.params;
  p.causal = o.causal;
  if (!o.align.empty()) p.align = parse_align(o.align);
  if (!o.window.empty()) p.window = parse_window(o.window);
  if (!o.scale.empty()) p.scale = parse_finite<float>("--scale", o.scale);
  if (!o.softcap.empty()) p.softcap = parse_finite<float>("--softcap", o.softcap);
  if (!o.kv_lens.empty()) pp.kv_lens = parse_int_list("--kv-lens", o.kv_lens);
  if (!o.q_lens.empty()) pp.q_lens = parse_int_list("--q-lens", o.q_lens);
  p.kv_lens = pp.kv_lens;
  p.q_lens = pp.q_lens;
  if (!o.threads.empty()) p.num_threads = parse_threads(o.threads, /*zero_is_default=*/true);
  if (!o.mask.empty()) {
    pp.mask = load_npy("--mask", o.mask);
    p.mask = pp.mask.view();
  }
}

NpyArray load_npy(const std::string& option, const std::string& path) {
  try {
    return read_npy(path);
  } catch (const Error& e) {
    throw Error(option + ": " + e.what());
  }
}

void call_attention(const TensorView& q, const TensorView& k, const TensorView& v,
                    const AttentionParams& params, const AttentionOutputs& outputs) {
  try {
    attention(q, k, v, params, outputs);
  } catch (const Error& e) {
    throw Error(with_option_names(e.what()));
  }
}

}  // namespace xattn::cli
