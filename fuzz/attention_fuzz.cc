// Fuzzes attention, attention_varlen, attention_backward and attention_varlen_backward with small
// problems decoded from the input (attention_case.h): any sizes, strides (zero, negative,
// permuted, overlapping for inputs), dtypes, parameters, masks and optional outputs, then a few
// corruptions. The contract checked on every call:
//   - it throws xattn::Error (and nothing else) exactly when the documented rules refuse the call
//     (some edge cases may go either way), leaving every output byte as it was;
//   - otherwise its results match the float64 reference within the f32 rounding the inputs
//     allow, outputs are written only at their elements, inputs never, and a second call gives
//     the same bits (whatever the outputs held before);
//   - elements that no visible (query, key) pair uses may hold NaN or Inf without effect, and
//     gaps between strided elements are NaN, so reading them shows;
//   - every argument lives in a malloc'd block of exactly its elements: ASan sees any access
//     outside it.
// Anything else traps, and libFuzzer keeps the input.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "attention_case.h"
#include "attention_oracle.h"
#include "fuzz_util.h"
#include "xattn/xattn.h"

namespace xattn::fuzz {
namespace {

constexpr double kUlp = 0x1p-24;

std::string where(const Case& c) {
  std::ostringstream os;
  static constexpr const char* kEntries[] = {"attention", "attention_varlen", "attention_backward",
                                             "attention_varlen_backward"};
  os << kEntries[static_cast<int>(c.entry)] << " q=[";
  for (int d = 0; d < c.q.layout.rank && d < kMaxRank; ++d) os << (d ? "," : "") << c.q.layout.shape[d];
  os << "] dtype=" << static_cast<int>(c.q.dtype) << " threads=" << c.num_threads
     << " target=" << simd_target();
  return os.str();
}

std::string describe(const Case& c) {
  std::ostringstream os;
  os << where(c);
  for (const Arg* a : {&c.q, &c.k, &c.v, &c.mask, &c.out, &c.lse, &c.weights, &c.dout, &c.dq, &c.dk,
                       &c.dv, &c.dmask}) {
    if (!a->present) continue;
    os << "\n  " << a->name() << (a->null_data ? " null" : "") << (a->alias ? " aliased" : "")
       << " dtype=" << static_cast<int>(a->dtype) << " shape=[";
    for (int d = 0; d < a->layout.rank && d < kMaxRank; ++d) os << (d ? "," : "") << a->layout.shape[d];
    os << "] strides=[";
    for (int d = 0; d < a->layout.rank && d < kMaxRank; ++d) os << (d ? "," : "") << a->layout.strides[d];
    os << "]";
  }
  os << "\n  scale=" << (c.scale ? std::to_string(*c.scale) : "default") << " softcap=" << c.softcap
     << " causal=" << c.causal << " align=" << static_cast<int>(c.align) << " window=("
     << c.window.left << "," << c.window.right << ") bf16_probabilities=" << c.bf16_probabilities
     << " poison=" << c.poison;
  auto list = [&](const char* name, bool has, const std::vector<int64_t>& xs) {
    if (!has) return;
    os << " " << name << "=";
    for (int64_t x : xs) os << x << ",";
  };
  list("kv_lens", c.has_kv_lens, c.kv_lens);
  list("q_lens", c.has_q_lens, c.q_lens);
  list("cu_q", c.varlen(), c.cu_q);
  list("cu_k", c.varlen(), c.cu_k);
  return os.str();
}

// Values for an input block, every slot (gaps too; poison_gaps overwrites those).
void fill_input(const Case& c, Arg& a, Rng& rng) {
  const int64_t e = a.esize();
  for (int64_t s = 0; s < a.block_elements(); ++s) {
    double x;
    if (&a == &c.mask) {
      x = a.dtype == DType::kBool ? (rng.chance(c.mask_true) ? 1 : 0)
                                  : (rng.chance(c.mask_neg_inf) ? -kInf : rng.normal());
    } else if (&a == &c.dout) {
      x = rng.normal();
    } else {
      x = rng.normal() * c.magnitude;
    }
    store(a.dtype, a.block() + s * e, x);
  }
}

void fill_random_bytes(Arg& a, Rng& rng) {
  const int64_t n = a.block_elements() * a.esize();
  for (int64_t i = 0; i < n; ++i) a.block()[i] = static_cast<uint8_t>(rng.next());
}

// NaN in the slots no element of the view uses: a kernel that reads them shows it.
void poison_gaps(Arg& a) {
  if (!is_float(a.dtype)) return;
  const std::vector<char> used = a.coverage();
  for (int64_t s = 0; s < a.block_elements(); ++s)
    if (!used[s]) store(a.dtype, a.block() + s * a.esize(), std::nan(""));
}

// NaN or ±Inf in q, k, v slots that only elements no visible pair reads use.
void poison_unseen(const Case& c, const Oracle& o, Arg& a, Rng& rng) {
  if (c.poison == 0 || !is_float(a.dtype)) return;
  std::vector<char> keep(static_cast<size_t>(a.block_elements()), 0);
  for_each_element(a.layout, [&](int64_t flat, int64_t off) {
    if (needed(c, o, a, flat)) keep[a.slot(off)] = 1;
  });
  const std::vector<char> used = a.coverage();
  for (int64_t s = 0; s < a.block_elements(); ++s) {
    if (!used[s] || keep[s] || !rng.chance(0.5)) continue;
    const double x = c.poison == 1 ? std::nan("") : c.poison == 2 ? (rng.chance(0.5) ? kInf : -kInf)
                                                  : (rng.chance(0.5) ? std::nan("") : -kInf);
    store(a.dtype, a.block() + s * a.esize(), x);
  }
}

// An output pointed into an input's memory: must be refused (outputs share no memory with the
// inputs). Only between non-empty views, so a wrongly accepted call writes where ASan sees it.
void alias_outputs(Case& c, Rng& rng) {
  if (!c.aliased) return;
  c.aliased = false;
  std::vector<Arg*> outs, ins;
  for (Arg* a : c.present()) {
    if (!a->addressable() || numel(a->layout) == 0 || a->null_data) continue;
    const bool written = c.backward() ? (a == &c.dq || a == &c.dk || a == &c.dv || a == &c.dmask)
                                      : a->output();
    (written ? outs : ins).push_back(a);
  }
  if (outs.empty() || ins.empty()) return;
  Arg* o = outs[rng.next() % outs.size()];
  Arg* i = ins[rng.next() % ins.size()];
  o->alias = i->data();
  c.aliased = true;
}

// Runs `call`; an xattn::Error gives false, any other exception traps.
bool attempt(const Case& c, const std::function<void()>& call, std::string& message) {
  try {
    call();
    return true;
  } catch (const Error& e) {
    message = e.what();
    return false;
  } catch (const std::exception& e) {
    fail(where(c) + ": threw a non-xattn exception: " + e.what());
  } catch (...) {
    fail(where(c) + ": threw something that is not a std::exception");
  }
}

// Row-major bytes of the view's elements, to compare two runs bit for bit.
std::vector<uint8_t> element_bytes(const Arg& a) {
  std::vector<uint8_t> out;
  if (!a.addressable()) return out;
  const int64_t e = a.esize();
  for_each_element(a.layout, [&](int64_t, int64_t off) {
    const uint8_t* p = a.at(off);
    out.insert(out.end(), p, p + e);
  });
  return out;
}

// One call under the contract: outputs prefilled with random bytes; refused calls change
// nothing; accepted ones touch only their outputs' elements. Returns whether it was accepted.
bool checked_call(const Case& c, Expect expect, const std::vector<Arg*>& outs,
                  const std::vector<Arg*>& ins, Rng& rng, const std::function<void()>& call) {
  for (Arg* o : outs) fill_random_bytes(*o, rng), o->snapshot();
  for (Arg* i : ins) i->snapshot();
  std::string message;
  const bool ok = attempt(c, call, message);
  for (Arg* i : ins) check(i->unchanged(), where(c) + ": changed its input " + i->name());
  if (!ok) {
    check(expect != Expect::kSucceed, where(c) + ": refused a valid call: " + message);
    for (Arg* o : outs) check(o->unchanged(), where(c) + ": wrote " + o->name() + " and then threw: " + message);
    return false;
  }
  check(expect != Expect::kRefuse, where(c) + ": accepted a call the contract refuses");
  for (Arg* o : outs) check(o->gaps_unchanged(), where(c) + ": wrote between the elements of " + o->name());
  return true;
}

void expect_close(const Case& c, const char* name, const std::vector<double>& got,
                  const std::vector<double>& want, double abs_tol, double rel_tol,
                  const std::vector<double>* scale = nullptr, double scale_tol = 0) {
  check(got.size() == want.size(), where(c) + ": " + name + " has " + std::to_string(got.size()) +
                                       " elements, the oracle " + std::to_string(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = got[i], w = want[i];
    bool ok;
    double tol = 0;
    if (std::isinf(w) || std::isinf(g)) {
      ok = g == w;
    } else {
      tol = abs_tol + rel_tol * std::abs(w) + (scale ? scale_tol * (*scale)[i] : 0) + 1e-7;
      ok = std::abs(g - w) <= tol;  // false for NaN
    }
    if (!ok) {
      std::ostringstream os;
      os << where(c) << ": " << name << "[" << i << "] = " << g << ", the oracle says " << w
         << " (tolerance " << tol << ")";
      fail(os.str());
    }
  }
}

double rounding_of(DType t) { return t == DType::kF16 ? 0x1p-11 : t == DType::kBF16 ? 0x1p-8 : 0; }

// Relative error of each probability from f32 scores: the rounding of a D-term dot product
// and of the score arithmetic, relative to the largest |score| terms, and a tanh's error.
double probability_error(const Case& c, const Oracle& o) {
  return static_cast<double>(o.D + 8) * kUlp * o.score_bound() + 0x1p-20 * c.softcap;
}

void compare_forward(const Case& c, const Oracle& o, bool exact_probabilities) {
  const Expected want = expected_forward(o, c.varlen());
  const double max_v = o.max_v(), delta = probability_error(c, o);
  const double pv = !exact_probabilities && c.bf16_probabilities && c.q.dtype == DType::kBF16
                        ? 0x1p-9 * max_v
                        : 0;
  // Out: f32 arithmetic (1e-5·max|V|), the probabilities' error (twice: weights and their
  // sum), bf16 probabilities when asked for, and the output dtype's final rounding.
  expect_close(c, "out", c.out.read(), want.out, 1e-5 * max_v + 4 * delta * max_v + pv,
               rounding_of(c.out.dtype));
  if (c.lse.present) expect_close(c, "lse", c.lse.read(), want.lse, 1e-5 + 2 * delta, 1e-5);
  if (c.weights.present)
    expect_close(c, "weights", c.weights.read(), want.weights, 1e-5 + 4 * delta, rounding_of(c.weights.dtype));
}

void compare_backward(const Case& c, const Oracle& o) {
  const reference::Gradients want =
      expected_backward(o, c.varlen(), c.dout.read(), c.mask.present ? numel(c.mask.layout) : 0);
  double max_lse = 0;
  for (double l : expected_forward(o, c.varlen()).lse)
    if (std::isfinite(l)) max_lse = std::max(max_lse, std::abs(l));
  // As backward_test.cc: 1e-5 of the sum of absolute terms, plus p recomputed from the f32 lse
  // (2^-21·|lse|) and from f32 scores, and the gradient dtype's rounding. A softcap's slope
  // 1 - tanh²(s/c) moves by up to 2·Δs/c of itself for a score error Δs: small caps amplify.
  const double rel = 1e-5 + 0x1p-21 * max_lse + 4 * probability_error(c, o) +
                     (c.softcap > 0 ? 2 * probability_error(c, o) / c.softcap : 0);
  expect_close(c, "dq", c.dq.read(), want.dq, 0, rounding_of(c.dq.dtype), &want.dq_scale, rel);
  expect_close(c, "dk", c.dk.read(), want.dk, 0, rounding_of(c.dk.dtype), &want.dk_scale, rel);
  expect_close(c, "dv", c.dv.read(), want.dv, 0, rounding_of(c.dv.dtype), &want.dv_scale, rel);
  if (c.dmask.present)
    expect_close(c, "dmask", c.dmask.read(), want.dmask, 0, rounding_of(c.dmask.dtype), &want.dmask_scale, rel);
}

void run_forward(const Case& c) {
  const AttentionParams params = c.params();
  AttentionOutputs outputs{c.out.mutable_view()};
  if (c.lse.present) outputs.lse = c.lse.mutable_view();
  if (c.weights.present) outputs.weights = c.weights.mutable_view();
  if (c.varlen()) attention_varlen(c.q.view(), c.k.view(), c.v.view(), c.cu_q, c.cu_k, params, outputs);
  else attention(c.q.view(), c.k.view(), c.v.view(), params, outputs);
}

void run_backward(const Case& c) {
  const AttentionParams params = c.params();
  AttentionGradients grads{c.dq.mutable_view(), c.dk.mutable_view(), c.dv.mutable_view()};
  if (c.dmask.present) grads.dmask = c.dmask.mutable_view();
  if (c.varlen())
    attention_varlen_backward(c.q.view(), c.k.view(), c.v.view(), c.cu_q, c.cu_k, c.out.view(),
                              c.lse.view(), c.dout.view(), params, grads);
  else
    attention_backward(c.q.view(), c.k.view(), c.v.view(), c.out.view(), c.lse.view(),
                       c.dout.view(), params, grads);
}

// Twice, with different bytes in the outputs beforehand: the same bits.
void check_deterministic(const Case& c, const std::vector<Arg*>& outs, const std::vector<Arg*>& ins,
                         Rng& rng, const std::function<void()>& call) {
  std::vector<std::vector<uint8_t>> first;
  for (Arg* o : outs) first.push_back(element_bytes(*o));
  check(checked_call(c, Expect::kSucceed, outs, ins, rng, call), where(c) + ": refused on the second try");
  for (size_t i = 0; i < outs.size(); ++i)
    check(element_bytes(*outs[i]) == first[i], where(c) + ": " + outs[i]->name() + " differs between two runs");
}

void run_case(Case& c) {
  static const std::vector<std::string> targets = available_simd_targets();
  force_simd_target(targets[static_cast<size_t>(c.simd_target) % targets.size()]);

  for (Arg* a : c.all()) a->allocate();
  Rng rng(c.seed);
  for (Arg* a : {&c.q, &c.k, &c.v, &c.mask, &c.dout}) {
    if (!a->present) continue;
    fill_input(c, *a, rng);
    poison_gaps(*a);
  }
  alias_outputs(c, rng);
  Expect expect = verdict(c);
  // XATTN_FUZZ_VERBOSE=1: what each input decodes to (for writing seeds and reading crashes).
  static const bool verbose = std::getenv("XATTN_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    static constexpr const char* kExpect[] = {"succeed", "refuse", "either"};
    std::fprintf(stderr, "case: %s expect=%s\n", describe(c).c_str(), kExpect[static_cast<int>(expect)]);
  }
  if (expect != Expect::kRefuse) {
    // A call that may be accepted runs in full: only with sizes it can finish quickly, and
    // memory behind every element it may touch.
    for (Arg* a : c.present()) {
      if (!a->addressable()) return;
      for (int d = 0; d < a->layout.rank && d < kMaxRank; ++d)
        if (a->layout.shape[d] > 4096) return;
    }
  }
  // Highway 1.0.3's EMU128 ConvertTo casts NaN to int (undefined; x86 targets convert it to
  // INT_MIN), which its Exp and Tanh do for a NaN score: no NaN or Inf in unseen elements there.
  if (simd_target() == "EMU128") c.poison = 0;
  Oracle oracle;
  if (expect != Expect::kRefuse) {
    oracle = make_oracle(c);
    for (Arg* a : {&c.q, &c.k, &c.v}) poison_unseen(c, oracle, *a, rng);
    oracle = make_oracle(c);  // with the poisoned values (which no visible pair reads)
  }

  std::vector<Arg*> fwd_outs, fwd_ins = {&c.q, &c.k, &c.v};
  if (c.mask.present) fwd_ins.push_back(&c.mask);
  for (Arg* a : {&c.out, &c.lse, &c.weights})
    if (a->present && !a->null_data) fwd_outs.push_back(a);

  if (!c.backward()) {
    if (checked_call(c, expect, fwd_outs, fwd_ins, rng, [&] { run_forward(c); })) {
      compare_forward(c, oracle, false);
      check_deterministic(c, fwd_outs, fwd_ins, rng, [&] { run_forward(c); });
    }
    return;
  }

  // The backward's out and lse come from the forward (exact probabilities), or, where the
  // forward refuses the arguments, are random: then the backward must refuse them too.
  // (A refused call may have arguments without memory behind them: then no forward.)
  bool runnable = true;
  for (Arg* a : {&c.q, &c.k, &c.v, &c.mask, &c.out, &c.lse}) {
    if (!a->present) continue;
    runnable = runnable && a->addressable();
    for (int d = 0; d < a->layout.rank && d < kMaxRank; ++d) runnable = runnable && a->layout.shape[d] <= 4096;
  }
  const bool bf16_probabilities = c.bf16_probabilities;
  c.bf16_probabilities = false;
  std::string message;
  for (Arg* o : fwd_outs) fill_random_bytes(*o, rng);
  const bool forward_ok = runnable && attempt(c, [&] { run_forward(c); }, message);
  c.bf16_probabilities = bf16_probabilities;
  if (runnable && !forward_ok) {
    check(expect != Expect::kSucceed, where(c) + ": the forward refused a valid call: " + message);
    expect = Expect::kRefuse;
  }
  if (!forward_ok) {
    for (Arg* o : fwd_outs)
      for (int64_t s = 0; s < o->block_elements(); ++s) store(o->dtype, o->block() + s * o->esize(), rng.normal());
  } else if (expect != Expect::kRefuse) {
    compare_forward(c, oracle, true);
  }
  std::vector<Arg*> outs, ins = fwd_ins;
  for (Arg* a : {&c.out, &c.lse, &c.dout}) ins.push_back(a);
  for (Arg* a : {&c.dq, &c.dk, &c.dv, &c.dmask})
    if (a->present && !a->null_data) outs.push_back(a);
  if (checked_call(c, expect, outs, ins, rng, [&] { run_backward(c); })) {
    // A 16-bit out changes dout·out by its rounding, beyond the oracle's exact forward.
    if (c.out.dtype == DType::kF32) compare_backward(c, oracle);
    check_deterministic(c, outs, ins, rng, [&] { run_backward(c); });
  }
}

}  // namespace
}  // namespace xattn::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  xattn::fuzz::Bytes in(data, size);
  xattn::fuzz::Case c;
  xattn::fuzz::decode_case(c, in);
  xattn::fuzz::decode_corruptions(c, in);
  xattn::fuzz::run_case(c);
  return 0;
}
