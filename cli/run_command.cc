// Loads and checks the inputs, gives 3-D inputs a head axis, allocates the outputs, calls the
// library and writes the files. No attention math lives here.

#include "run_command.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <memory>
#include <utility>
#include <vector>

#include "example.h"
#include "xattn/attention.h"
#include "xattn/error.h"
#include "xattn/npy.h"

namespace xattn::cli {
namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

// A [B, L, D] array seen as [B, 1, L, D]: one head. The new axis has size 1, so its stride is
// never used to step; any value is correct.
TensorView insert_head_axis(TensorView v) {
  Layout l;
  l.rank = 4;
  l.shape = {v.layout.shape[0], 1, v.layout.shape[1], v.layout.shape[2]};
  l.strides = {v.layout.strides[0], v.layout.strides[0], v.layout.strides[1], v.layout.strides[2]};
  v.layout = l;
  return v;
}

// An uninitialised output buffer: pages are only touched when the kernel writes them.
struct Buffer {
  std::unique_ptr<std::byte[]> data;
  MutableTensorView view;
};

Buffer allocate(const char* what, DType dtype, Layout layout) {
  int64_t bytes = dtype_size(dtype);
  for (int d = 0; d < layout.rank; ++d) {
    if (__builtin_mul_overflow(bytes, layout.shape[d], &bytes)) {
      throw Error(std::string(what) + ": output too large to allocate");
    }
  }
  Buffer b;
  b.data = std::make_unique_for_overwrite<std::byte[]>(static_cast<size_t>(bytes));
  b.view = {b.data.get(), dtype, layout};
  return b;
}

std::vector<int64_t> file_shape(const Layout& l, bool one_head) {
  std::vector<int64_t> s(l.shape.begin(), l.shape.begin() + l.rank);
  if (one_head) s.erase(s.begin() + 1);
  return s;
}

void require(const std::string& value, const char* option, const char* because) {
  if (value.empty()) throw Error(std::string(option) + " is required " + because);
}

void run_files(const RunOptions& o, ParsedParams& pp) {
  const char* kWhy = "when any of --q/--k/--v is given (give none to run the built-in example)";
  require(o.q, "--q", kWhy);
  require(o.k, "--k", kWhy);
  require(o.v, "--v", kWhy);
  require(o.outputs.out, "-o/--out", "to write the result");
  check_output_paths(o.outputs);

  const NpyArray q = load_npy("--q", o.q), k = load_npy("--k", o.k), v = load_npy("--v", o.v);
  const size_t rank = q.shape.size();
  if (rank != 3 && rank != 4) {
    throw Error("--q: expected a 3-D [B, L, D] or 4-D [B, H, L, D] array, got shape " + shape_text(q.shape));
  }
  for (const auto& [option, a] : {std::pair{"--k", &k}, std::pair{"--v", &v}}) {
    if (a->shape.size() != rank) {
      throw Error(std::string(option) + ": shape " + shape_text(a->shape) + " has rank " +
                  std::to_string(a->shape.size()) + " but --q has rank " + std::to_string(rank) +
                  " (Q, K and V must all be 3-D [B, L, D] or all 4-D [B, H, L, D])");
    }
  }
  const bool one_head = rank == 3;
  TensorView qv = q.view(), kv = k.view(), vv = v.view();
  if (one_head) {
    qv = insert_head_axis(qv);
    kv = insert_head_axis(kv);
    vv = insert_head_axis(vv);
    // A [B, Lq, Lk] mask belongs to the same one-head world as the inputs.
    if (pp.params.mask.present() && pp.params.mask.rank() == 3) {
      pp.params.mask = insert_head_axis(pp.params.mask);
    }
  }

  const int64_t b = qv.size(0), hq = qv.size(1), lq = qv.size(2), lk = kv.size(2), dv = vv.size(3);
  const Buffer out = allocate("-o", q.dtype, Layout::contiguous({b, hq, lq, dv}));
  Buffer lse, weights;
  if (!o.outputs.lse.empty()) lse = allocate("--lse", DType::kF32, Layout::contiguous({b, hq, lq}));
  if (!o.outputs.weights.empty()) {
    weights = allocate("--weights", q.dtype, Layout::contiguous({b, hq, lq, lk}));
  }

  call_attention(qv, kv, vv, pp.params, {out.view, lse.view, weights.view});

  std::vector<OutputFile> files;
  files.push_back({"-o", o.outputs.out, out.view.dtype, file_shape(out.view.layout, one_head), out.data.get()});
  if (lse.data) {
    files.push_back({"--lse", o.outputs.lse, DType::kF32, file_shape(lse.view.layout, one_head), lse.data.get()});
  }
  if (weights.data) {
    files.push_back({"--weights", o.outputs.weights, weights.view.dtype,
                     file_shape(weights.view.layout, one_head), weights.data.get()});
  }
  write_outputs(files);
}

}  // namespace

CLI::App* add_run_command(CLI::App& app, RunOptions& o) {
  // Every option's value is parsed later and an empty string means "not given", so an explicitly
  // empty value ("--align=") must be refused here.
  const CLI::Validator non_empty(
      [](std::string& value) { return value.empty() ? std::string("empty value") : std::string(); }, "");
  CLI::App* run = app.add_subcommand(
      "run", "Cross-attention over .npy inputs: out = softmax(scale·Q·Kᵀ + mask)·V.\n"
             "With none of --q/--k/--v, runs a built-in two-sentence example and prints its "
             "attention map.");
  run->add_option("--q", o.q, "queries, [B,Hq,Lq,D] or [B,Lq,D] (float32 or float16)")->type_name("Q.npy");
  run->add_option("--k", o.k, "keys, [B,Hkv,Lk,D] or [B,Lk,D]")->type_name("K.npy");
  run->add_option("--v", o.v, "values, [B,Hkv,Lk,Dv] or [B,Lk,Dv]")->type_name("V.npy");
  run->add_option("--mask", o.mask,
                  "bool (true = may attend) or additive float mask, broadcast to [B,Hq,Lq,Lk] "
                  "([B,Lq,Lk] with 3-D inputs)")
      ->type_name("M.npy");
  run->add_flag("--causal", o.causal, "key j is visible to query i only if j <= i (after alignment)");
  run->add_option("--align", o.align, "causal diagonal alignment (default top_left)")
      ->type_name("top_left|bottom_right");
  run->add_option("--window", o.window, "sliding window: keys p-L..p+R visible, -1 = unbounded")
      ->type_name("L,R");
  run->add_option("--scale", o.scale, "score scale (default 1/sqrt(D))")->type_name("S");
  run->add_option("--softcap", o.softcap, "scores -> C·tanh(s/C) when C > 0")->type_name("C");
  run->add_option("--kv-lens", o.kv_lens, "valid keys per batch entry")->type_name("N,N,...");
  run->add_option("--q-lens", o.q_lens, "valid queries per batch entry (rows beyond are 0)")
      ->type_name("N,N,...");
  run->add_option("--threads", o.threads, "threads (default: all)")->type_name("N");
  run->add_option("-o,--out", o.outputs.out, "output, Q's dtype, [B,Hq,Lq,Dv] or [B,Lq,Dv]")
      ->type_name("OUT.npy");
  run->add_option("--lse", o.outputs.lse, "log-sum-exp per query row, float32")->type_name("LSE.npy");
  run->add_option("--weights", o.outputs.weights, "attention probabilities, Q's dtype")
      ->type_name("W.npy");
  for (CLI::Option* option : run->get_options()) {
    if (option->get_expected_min() > 0) option->check(non_empty);
  }
  return run;
}

void run_command(const RunOptions& o) {
  ParsedParams pp;
  parse_params(o, pp);
  if (o.q.empty() && o.k.empty() && o.v.empty()) {
    run_example(pp.params, o.outputs, std::cout);
  } else {
    run_files(o, pp);
  }
}

}  // namespace xattn::cli
