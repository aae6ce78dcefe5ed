#pragma once
// One attention call decoded from fuzz input: the entry point, sizes, parameters, the layout and
// dtype of every tensor argument, and then up to four corruptions (a wrong dtype, size, stride,
// rank, a null or aliased pointer, a bad parameter). verdict() states what the documented
// contract says the call must do with it: succeed, refuse (xattn::Error), or either.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include "tensor_arg.h"
#include "xattn/params.h"

namespace xattn::fuzz {

enum class Entry { kDense, kVarlen, kDenseBackward, kVarlenBackward };

struct Case {
  Entry entry = Entry::kDense;
  bool varlen() const { return entry == Entry::kVarlen || entry == Entry::kVarlenBackward; }
  bool backward() const { return entry == Entry::kDenseBackward || entry == Entry::kVarlenBackward; }

  // Parameters; the spans and the mask view are pointed at the members below by params().
  std::optional<float> scale;
  float softcap = 0;
  bool causal = false;
  CausalAlign align = CausalAlign::kTopLeft;
  Window window;
  int num_threads = 1;
  bool bf16_probabilities = false;
  bool has_kv_lens = false, has_q_lens = false;
  std::vector<int64_t> kv_lens, q_lens;
  std::vector<int64_t> cu_q, cu_k;  // varlen
  int simd_target = 0;              // index into available_simd_targets()

  Arg q{"q", false}, k{"k", false}, v{"v", false}, mask{"mask", false};
  // out and lse are the backward's inputs, but the forward that makes them writes them.
  Arg out{"out", true}, lse{"lse", true}, weights{"weights", true};
  Arg dout{"dout", false}, dq{"dq", true}, dk{"dk", true}, dv{"dv", true}, dmask{"dmask", true};
  bool aliased = false;  // an output points into an input's memory

  // Values.
  uint64_t seed = 0;
  double magnitude = 1;
  double mask_true = 0.75, mask_neg_inf = 0.15;
  int poison = 0;  // 0: only gaps; 1: NaN, 2: ±Inf, 3: both, in elements no visible pair uses

  std::vector<Arg*> all() {
    return {&q, &k, &v, &mask, &out, &lse, &weights, &dout, &dq, &dk, &dv, &dmask};
  }
  std::vector<Arg*> present() {
    std::vector<Arg*> r;
    for (Arg* a : all())
      if (a->present) r.push_back(a);
    return r;
  }

  AttentionParams params() const {
    AttentionParams p;
    p.scale = scale;
    p.softcap = softcap;
    p.causal = causal;
    p.align = align;
    p.window = window;
    p.num_threads = num_threads;
    p.bf16_probabilities = bf16_probabilities;
    if (has_kv_lens) p.kv_lens = kv_lens;
    if (has_q_lens) p.q_lens = q_lens;
    if (mask.present) p.mask = mask.view();
    return p;
  }
};

// --- decoding ------------------------------------------------------------------------------------

inline int64_t decode_length(uint8_t b) {
  if (b < 200) return 1 + b % 33;
  if (b < 250) return 33 + (b - 200) * 6;  // past the 64-row and 64/128-key tiles
  return 0;
}

inline int64_t decode_dim(uint8_t b) {
  static constexpr int64_t kWide[] = {64, 65, 96, 128, 127, 80, 48, 33};
  return b < 200 ? 1 + b % 40 : kWide[b % 8];
}

inline int64_t decode_window(uint8_t b) {
  static constexpr int64_t kSides[] = {-1, 0, 1, 2, 5, 17, 64, std::numeric_limits<int64_t>::max()};
  return kSides[b % 8];
}

// Sizes, parameters, layouts and values; corruptions come after (decode_corruptions).
inline void decode_case(Case& c, Bytes& in) {
  static constexpr Entry kEntries[] = {Entry::kDense, Entry::kDense, Entry::kDense,
                                       Entry::kDense, Entry::kVarlen, Entry::kVarlen,
                                       Entry::kDenseBackward, Entry::kVarlenBackward};
  c.entry = kEntries[in.pick(8)];
  static constexpr DType kTypes[] = {DType::kF32, DType::kF16, DType::kBF16};
  const DType dtype = kTypes[in.pick(3)];
  static constexpr int64_t kBatch[] = {1, 2, 1, 3, 2, 4, 1, 0};
  static constexpr int64_t kHeads[] = {1, 1, 2, 3, 1, 2, 4, 0};
  static constexpr int64_t kGroup[] = {1, 2, 1, 3, 4, 1, 2, 1};
  const int64_t B = kBatch[in.pick(8)];
  const int64_t Hkv = kHeads[in.pick(8)];
  const int64_t Hq = Hkv * kGroup[in.pick(8)];
  int64_t Lq = decode_length(in.next()), Lk = decode_length(in.next());
  const int64_t D = decode_dim(in.next());
  const uint8_t dv_byte = in.next();
  const int64_t Dv = dv_byte == 0 ? D : decode_dim(dv_byte);
  std::vector<int64_t> len_q, len_k;
  if (c.varlen()) {
    for (int64_t b = 0; b < B; ++b) {
      const uint8_t x = in.next(), y = in.next();
      len_q.push_back(x >= 240 ? 64 + (x - 240) * 16 : (x + 1) % 41);
      len_k.push_back(y >= 240 ? 64 + (y - 240) * 16 : (y + 1) % 41);
    }
  }
  // Keep the float64 oracle (and ASan) fast: at most ~1M multiply-adds.
  auto cost = [&] {
    if (!c.varlen()) return B * Hq * Lq * Lk * (D + Dv);
    int64_t s = 0;
    for (size_t b = 0; b < len_q.size(); ++b) s += Hq * len_q[b] * len_k[b] * (D + Dv);
    return s;
  };
  while (cost() > 1'000'000) {
    if (c.varlen()) {
      for (size_t b = 0; b < len_q.size(); ++b) len_q[b] /= 2, len_k[b] = len_k[b] * 3 / 4;
    } else {
      Lq = std::max<int64_t>(1, Lq / 2), Lk = std::max<int64_t>(1, Lk * 3 / 4);
    }
  }
  if (c.varlen()) {
    c.cu_q = {0}, c.cu_k = {0};
    for (size_t b = 0; b < len_q.size(); ++b) {
      c.cu_q.push_back(c.cu_q.back() + len_q[b]);
      c.cu_k.push_back(c.cu_k.back() + len_k[b]);
    }
  }

  // Parameters.
  static constexpr float kScales[] = {1, 0.5f, 0, -1, 2, 1e-3f, 8, -0.25f, 0.125f, 30};
  if (const uint8_t s = in.next(); s != 0) c.scale = kScales[s % 10];
  static constexpr float kSoftcaps[] = {1, 5, 30, 0.5f, 1e-3f, 100, 0.05f};
  if (const uint8_t s = in.next(); s != 0) c.softcap = kSoftcaps[s % 7];
  const uint8_t flags = in.next();
  c.causal = flags & 1;
  c.align = (flags & 2) ? CausalAlign::kBottomRight : CausalAlign::kTopLeft;
  if (flags & 4) c.window = {decode_window(in.next()), decode_window(in.next())};
  c.has_kv_lens = (flags & 8) && !c.varlen();
  c.has_q_lens = (flags & 16) && !c.varlen();
  c.bf16_probabilities = flags & 32;
  const bool has_mask = flags & 64;
  c.num_threads = in.pick(4);
  c.simd_target = in.next();

  // Tensors, with their intended shapes.
  auto set = [](Arg& a, DType t, std::vector<int64_t> shape) {
    a.present = true;
    a.dtype = t;
    a.layout.rank = static_cast<int>(shape.size());
    for (size_t d = 0; d < shape.size(); ++d) a.layout.shape[d] = shape[d];
  };
  const int64_t Tq = c.varlen() ? c.cu_q.back() : 0, Tk = c.varlen() ? c.cu_k.back() : 0;
  int64_t max_q = 0, max_k = 0;
  for (size_t b = 0; b < len_q.size(); ++b) max_q = std::max(max_q, len_q[b]), max_k = std::max(max_k, len_k[b]);
  if (c.varlen()) {
    set(c.q, dtype, {Tq, Hq, D}), set(c.k, dtype, {Tk, Hkv, D}), set(c.v, dtype, {Tk, Hkv, Dv});
  } else {
    set(c.q, dtype, {B, Hq, Lq, D}), set(c.k, dtype, {B, Hkv, Lk, D}), set(c.v, dtype, {B, Hkv, Lk, Dv});
  }
  if (has_mask) {
    static constexpr DType kMaskTypes[] = {DType::kBool, DType::kF32, DType::kF16, DType::kBF16, DType::kBool};
    const uint8_t m = in.next();
    const DType mt = m % 5 == 4 ? dtype : kMaskTypes[m % 5];
    const int rank = 1 + (m / 5) % 4;
    const uint8_t full = in.next();  // bit d: dim d broadcasts (size 1)
    const int64_t target[4] = {B, Hq, c.varlen() ? std::max<int64_t>(max_q, 1) : Lq,
                               c.varlen() ? std::max<int64_t>(max_k, 1) : Lk};
    std::vector<int64_t> shape;
    for (int d = 4 - rank; d < 4; ++d) shape.push_back((full >> d) & 1 ? 1 : target[d]);
    set(c.mask, mt, shape);
  }
  const uint8_t outs = in.next();
  const DType out_type = (outs & 1) ? dtype : DType::kF32;
  if (c.varlen()) {
    set(c.out, out_type, {Tq, Hq, Dv});
    if (!(outs & 2) || c.backward()) set(c.lse, DType::kF32, {Hq, Tq});
    if ((outs & 4) && !c.backward()) set(c.weights, (outs & 8) ? dtype : DType::kF32, {Hq, Tq, max_k});
  } else {
    set(c.out, out_type, {B, Hq, Lq, Dv});
    if (!(outs & 2) || c.backward()) set(c.lse, DType::kF32, {B, Hq, Lq});
    if ((outs & 4) && !c.backward()) set(c.weights, (outs & 8) ? dtype : DType::kF32, {B, Hq, Lq, Lk});
  }
  if (c.backward()) {
    const uint8_t g = in.next();
    auto pick_type = [&](int bit) { return (g >> bit) & 1 ? dtype : DType::kF32; };
    set(c.dout, pick_type(0), std::vector<int64_t>(c.out.layout.shape.begin(),
                                                   c.out.layout.shape.begin() + c.out.layout.rank));
    for (auto [grad, like, bit] : {std::tuple{&c.dq, &c.q, 1}, {&c.dk, &c.k, 2}, {&c.dv, &c.v, 3}})
      set(*grad, pick_type(bit),
          std::vector<int64_t>(like->layout.shape.begin(), like->layout.shape.begin() + like->layout.rank));
    if ((g & 16) && c.mask.present && c.mask.dtype != DType::kBool)
      set(c.dmask, (g & 32) ? c.mask.dtype : DType::kF32,
          std::vector<int64_t>(c.mask.layout.shape.begin(), c.mask.layout.shape.begin() + c.mask.layout.rank));
  }
  for (Arg* a : c.all()) {
    if (!a->present) continue;
    const std::vector<int64_t> shape(a->layout.shape.begin(), a->layout.shape.begin() + a->layout.rank);
    a->layout = decode_layout(shape, in, a->output(), a->self_overlap);
  }

  // Values.
  uint64_t seed = 0;
  for (int i = 0; i < 4; ++i) seed = seed << 8 | in.next();
  c.seed = seed;
  static constexpr double kMagnitudes[] = {1, 0.25, 3, 10};
  const uint8_t vm = in.next();
  c.magnitude = kMagnitudes[vm % 4];
  c.poison = (vm >> 2) % 4;
  static constexpr double kTrue[] = {0.75, 0.5, 0.05, 1.0};
  c.mask_true = kTrue[(vm >> 4) % 4];
  c.mask_neg_inf = c.mask_true == 1.0 ? 0 : c.mask_true * 0.2;
  Rng lens(seed ^ 0x5eed);
  if (c.has_kv_lens)
    for (int64_t b = 0; b < B; ++b) c.kv_lens.push_back(static_cast<int64_t>(lens.next() % (Lk + 1)));
  if (c.has_q_lens)
    for (int64_t b = 0; b < B; ++b) c.q_lens.push_back(static_cast<int64_t>(lens.next() % (Lq + 1)));
}

// Corruptions: each picks an argument (or parameter) and breaks it in one way. Sizes, strides
// and dtypes change the declared view, and memory is allocated for the view as declared, so a
// call that accepts a corrupted view still never needs memory outside its arguments.
inline void decode_corruptions(Case& c, Bytes& in) {
  for (int n = 0; n < 4 && in.more(); ++n) {
    const int kind = in.pick(8);
    if (kind == 0) break;
    std::vector<Arg*> args = c.present();
    Arg& a = *args[in.pick(static_cast<int>(args.size()))];
    const uint8_t x = in.next();
    const int d = a.layout.rank > 0 ? x % a.layout.rank : 0;
    const uint8_t y = in.next();
    switch (kind) {
      case 1: {
        static constexpr DType kAny[] = {DType::kF32, DType::kF16, DType::kBF16, DType::kBool,
                                         static_cast<DType>(7)};
        a.dtype = kAny[y % 5];
        break;
      }
      case 2: {
        if (a.layout.rank <= 0 || a.layout.rank > kMaxRank) break;
        int64_t& s = a.layout.shape[d];
        static constexpr int64_t kBig[] = {int64_t{1} << 40, 4097};
        switch (y % 6) {
          case 0: s = 0; break;
          case 1: s = -1; break;
          case 2: s += 1; break;
          case 3: s -= 1; break;
          default: s = kBig[y % 2]; break;
        }
        break;
      }
      case 3: {
        if (a.layout.rank <= 0 || a.layout.rank > kMaxRank) break;
        int64_t& s = a.layout.strides[d];
        static constexpr int64_t kStrides[] = {0, 1, -1, int64_t{1} << 62, -(int64_t{1} << 61),
                                               int64_t{1} << 40, 3};
        // Doubling may wrap (after an earlier corruption): any stride is fair input.
        s = y % 8 == 7 ? static_cast<int64_t>(static_cast<uint64_t>(s) * 2) : kStrides[y % 8];
        if (a.output()) a.self_overlap = true;  // may now step into its other dims
        break;
      }
      case 4: {
        Layout& l = a.layout;
        if (y % 3 == 0) {
          l.rank -= 1;  // drops the last dim (or goes negative)
        } else if (y % 3 == 1 && l.rank >= 0 && l.rank < kMaxRank) {
          for (int i = l.rank; i > 0; --i) l.shape[i] = l.shape[i - 1], l.strides[i] = l.strides[i - 1];
          l.shape[0] = 1, l.strides[0] = 0;
          l.rank += 1;
        } else {
          l.rank = y % 2 ? kMaxRank + 1 : 0;
        }
        break;
      }
      case 5:
        if (&a == &c.mask || &a == &c.weights || &a == &c.dmask) a.present = false;  // absent
        else if (&a != &c.lse || c.backward()) a.null_data = true;  // a required one: null
        else a.present = false;
        break;
      case 6: {
        switch (y % 16) {
          case 0: c.scale = std::numeric_limits<float>::quiet_NaN(); break;
          case 1: c.scale = (x % 2 ? 1 : -1) * std::numeric_limits<float>::infinity(); break;
          case 2: c.softcap = -1; break;
          case 3: c.softcap = std::numeric_limits<float>::quiet_NaN(); break;
          case 4: c.softcap = std::numeric_limits<float>::infinity(); break;
          case 5: c.softcap = 1e-39f; break;
          case 6: c.window.left = -2 - x; break;
          case 7: c.window.right = -3; break;
          case 8: c.num_threads = -1; break;
          case 9: c.num_threads = x % 2 ? 5000 : std::numeric_limits<int>::max(); break;
          case 10: c.align = static_cast<CausalAlign>(2 + x % 100); break;
          case 11: c.has_kv_lens = true, c.kv_lens.push_back(x % 3); break;
          case 12:
            c.has_kv_lens = true;
            if (c.kv_lens.empty()) c.kv_lens.push_back(0);
            c.kv_lens[0] = x % 2 ? -1 : 100000;
            break;
          case 13:
            c.has_q_lens = true;
            if (c.q_lens.empty()) c.q_lens.push_back(0);
            c.q_lens[0] = x % 2 ? -5 : 100000;
            break;
          case 14:
            if (!c.cu_q.empty()) {
              if (x % 3 == 0) c.cu_q[0] = 1;
              else if (x % 3 == 1) c.cu_q.back() += 1;
              else c.cu_q.clear();
            }
            break;
          default:
            if (x % 2 && c.cu_k.size() >= 3) std::swap(c.cu_k[1], c.cu_k[2]);
            else c.cu_k.push_back(c.cu_k.empty() ? 0 : c.cu_k.back());
            break;
        }
        break;
      }
      default:
        c.aliased = true;  // applied after allocation (alias_outputs)
        break;
    }
  }
}

// --- the contract --------------------------------------------------------------------------------

enum class Expect { kSucceed, kRefuse, kEither };

class Verdict {
 public:
  void refuse(bool bad) { refuse_ = refuse_ || bad; }
  void unsure(bool maybe) { unsure_ = unsure_ || maybe; }
  bool refused() const { return refuse_; }
  Expect expect() const { return refuse_ ? Expect::kRefuse : unsure_ ? Expect::kEither : Expect::kSucceed; }

 private:
  bool refuse_ = false, unsure_ = false;
};

inline bool has_shape(const Arg& a, std::initializer_list<int64_t> shape) {
  if (a.layout.rank != static_cast<int>(shape.size())) return false;
  int d = 0;
  for (int64_t s : shape)
    if (a.layout.shape[d++] != s) return false;
  return true;
}

// An output view: a zero stride on a dim longer than 1 writes one element twice (an empty
// view writes nothing: any strides).
inline void check_writable(const Arg& a, Verdict& v) {
  if (a.valid_rank() && numel(a.layout) == 0) return;
  for (int d = 0; d < a.layout.rank && d < kMaxRank; ++d)
    v.refuse(a.layout.shape[d] > 1 && a.layout.strides[d] == 0);
  v.unsure(a.self_overlap);
}

inline bool offsets_valid(const std::vector<int64_t>& cu, int64_t total) {
  if (cu.empty() || cu[0] != 0 || cu.back() != total) return false;
  for (size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1]) return false;
  return true;
}

// What the documented contract (include/xattn/attention.h, params.h) says about the call.
inline Expect verdict(const Case& c) {
  Verdict v;
  const int rank = c.varlen() ? 3 : 4;
  // Every argument: a rank the views can hold, no negative size, an address range without
  // overflow; a required one non-null.
  for (const Arg* a : {&c.q, &c.k, &c.v, &c.mask, &c.out, &c.lse, &c.weights, &c.dout, &c.dq,
                       &c.dk, &c.dv, &c.dmask}) {
    if (!a->present) continue;
    v.refuse(a->null_data || !a->valid_rank() || a->overflows());
    for (int d = 0; d < a->layout.rank && d < kMaxRank; ++d) v.refuse(a->layout.shape[d] < 0);
  }
  for (const Arg* a : {&c.q, &c.k, &c.v, &c.out}) v.refuse(!a->present || a->layout.rank != rank);
  if (c.backward())
    for (const Arg* a : {&c.lse, &c.dout, &c.dq, &c.dk, &c.dv}) v.refuse(!a->present);
  if (v.refused()) return Expect::kRefuse;

  const Arg &q = c.q, &k = c.k, &val = c.v;
  v.refuse(!is_float(q.dtype) || k.dtype != q.dtype || val.dtype != q.dtype);
  const auto& qs = q.layout.shape;
  const auto& ks = k.layout.shape;
  const auto& vs = val.layout.shape;
  int64_t B, Hq, Hkv, D, Dv, rows_q, rows_k;  // rows: Lq/Lk (dense) or the max lengths (varlen)
  if (c.varlen()) {
    const int64_t Tq = qs[0], Tk = ks[0];
    Hq = qs[1], D = qs[2], Hkv = ks[1], Dv = vs[2];
    v.refuse(ks[2] != D || vs[0] != Tk || vs[1] != Hkv);
    v.refuse(!offsets_valid(c.cu_q, Tq) || !offsets_valid(c.cu_k, Tk) || c.cu_q.size() != c.cu_k.size());
    v.refuse(c.has_kv_lens || c.has_q_lens);
    if (v.refused()) return Expect::kRefuse;
    B = static_cast<int64_t>(c.cu_q.size()) - 1;
    rows_q = rows_k = 0;
    for (int64_t b = 0; b < B; ++b) {
      rows_q = std::max(rows_q, c.cu_q[b + 1] - c.cu_q[b]);
      rows_k = std::max(rows_k, c.cu_k[b + 1] - c.cu_k[b]);
    }
    v.refuse(!has_shape(c.out, {Tq, Hq, Dv}));
    if (c.lse.present) v.refuse(!has_shape(c.lse, {Hq, Tq}));
    if (c.weights.present) v.refuse(!has_shape(c.weights, {Hq, Tq, rows_k}));
  } else {
    B = qs[0], Hq = qs[1], rows_q = qs[2], D = qs[3];
    Hkv = ks[1], rows_k = ks[2], Dv = vs[3];
    v.refuse(ks[0] != B || ks[3] != D || vs[0] != B || vs[1] != Hkv || vs[2] != rows_k);
    auto lens_ok = [&](bool has, const std::vector<int64_t>& lens, int64_t limit) {
      if (!has) return true;
      if (static_cast<int64_t>(lens.size()) != B) return false;
      for (int64_t l : lens)
        if (l < 0 || l > limit) return false;
      return true;
    };
    v.refuse(!lens_ok(c.has_kv_lens, c.kv_lens, rows_k) || !lens_ok(c.has_q_lens, c.q_lens, rows_q));
    v.refuse(!has_shape(c.out, {B, Hq, rows_q, Dv}));
    if (c.lse.present) v.refuse(!has_shape(c.lse, {B, Hq, rows_q}));
    if (c.weights.present) v.refuse(!has_shape(c.weights, {B, Hq, rows_q, rows_k}));
  }
  // A zero feature width has no use (and no default scale); zero counts are empty problems.
  v.refuse(D <= 0 || Dv <= 0 || k.layout.shape[rank - 1] <= 0);
  v.refuse(Hkv == 0 ? Hq != 0 : Hq % Hkv != 0);
  v.refuse(c.out.dtype != DType::kF32 && c.out.dtype != q.dtype);
  check_writable(c.out, v);
  if (c.lse.present) v.refuse(c.lse.dtype != DType::kF32), check_writable(c.lse, v);
  if (c.weights.present) {
    v.refuse(c.weights.dtype != DType::kF32 && c.weights.dtype != q.dtype);
    check_writable(c.weights, v);
  }
  if (c.mask.present) {
    const Arg& m = c.mask;
    v.refuse(m.layout.rank < 1 || m.layout.rank > 4 || !is_known(m.dtype));
    if (!v.refused()) {
      const int64_t target[4] = {B, Hq, c.varlen() ? std::max<int64_t>(rows_q, 1) : rows_q,
                                 c.varlen() ? std::max<int64_t>(rows_k, 1) : rows_k};
      for (int d = 0; d < m.layout.rank; ++d) {
        const int64_t s = m.layout.shape[d], t = target[d + 4 - m.layout.rank];
        v.refuse(s != 1 && s != t);
      }
    }
  }
  // Parameters.
  v.refuse(c.scale && !std::isfinite(*c.scale));
  v.refuse(!std::isfinite(c.softcap) || c.softcap < 0);
  // At least 1/FLT_MAX, so that 1/softcap is finite.
  v.refuse(c.softcap > 0 && c.softcap < 1.0f / std::numeric_limits<float>::max());
  v.refuse(c.window.left < -1 || c.window.right < -1);
  v.refuse(c.num_threads < 0 || c.num_threads > 4096);
  v.refuse(c.align != CausalAlign::kTopLeft && c.align != CausalAlign::kBottomRight);

  if (c.backward()) {
    v.refuse(c.dout.layout.rank != c.out.layout.rank);
    for (int d = 0; d < rank && d < c.dout.layout.rank; ++d)
      v.refuse(c.dout.layout.shape[d] != c.out.layout.shape[d]);
    v.refuse(c.dout.dtype != DType::kF32 && c.dout.dtype != q.dtype);
    for (auto [g, like] : {std::pair{&c.dq, &q}, {&c.dk, &k}, {&c.dv, &val}}) {
      v.refuse(g->layout.rank != rank || (g->dtype != DType::kF32 && g->dtype != q.dtype));
      for (int d = 0; d < rank && d < g->layout.rank; ++d) v.refuse(g->layout.shape[d] != like->layout.shape[d]);
      check_writable(*g, v);
    }
    if (c.dmask.present) {
      const Arg &dm = c.dmask, &m = c.mask;
      v.refuse(!m.present || m.dtype == DType::kBool);
      if (m.present) {
        v.refuse(dm.layout.rank != m.layout.rank);
        for (int d = 0; d < dm.layout.rank && d < m.layout.rank && d < kMaxRank; ++d)
          v.refuse(dm.layout.shape[d] != m.layout.shape[d]);
        v.refuse(dm.dtype != DType::kF32 && dm.dtype != m.dtype);
      }
      check_writable(dm, v);
    }
  }
  v.refuse(c.aliased);
  return v.expect();
}

}  // namespace xattn::fuzz
