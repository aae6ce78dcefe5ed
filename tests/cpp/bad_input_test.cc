// One test per class of bad input: the message names the argument and what was expected, and
// the outputs are left untouched.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "xattn/xattn.h"

namespace xattn {
namespace {

using ::testing::HasSubstr;

struct Call {
  int64_t B = 2, Hq = 4, Hkv = 2, Lq = 5, Lk = 8, D = 16, Dv = 16;
  std::vector<float> q = std::vector<float>(B * Hq * Lq * D, 0.5f);
  std::vector<float> k = std::vector<float>(B * Hkv * Lk * D, 0.25f);
  std::vector<float> v = std::vector<float>(B * Hkv * Lk * Dv, 1.0f);
  std::vector<float> out = std::vector<float>(B * Hq * Lq * Dv, 42.0f);
  std::vector<float> lse = std::vector<float>(B * Hq * Lq, 42.0f);
  TensorView qv = view(q.data(), {B, Hq, Lq, D});
  TensorView kv = view(k.data(), {B, Hkv, Lk, D});
  TensorView vv = view(v.data(), {B, Hkv, Lk, Dv});
  AttentionParams params;
  AttentionOutputs outputs{view(out.data(), {B, Hq, Lq, Dv}), view(lse.data(), {B, Hq, Lq})};

  // Runs the call, expecting xattn::Error with every fragment, and untouched outputs.
  void expect_error(std::initializer_list<const char*> fragments) {
    try {
      attention(qv, kv, vv, params, outputs);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const char* f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
    }
    for (float x : out) ASSERT_EQ(x, 42.0f);
    for (float x : lse) ASSERT_EQ(x, 42.0f);
  }
};

TEST(BadInput, ValidCallSucceeds) {
  Call c;
  attention(c.qv, c.kv, c.vv, c.params, c.outputs);
  EXPECT_FLOAT_EQ(c.out[0], 1.0f);
}

TEST(BadInput, MismatchedHeadDim) {
  Call c;
  c.kv = view(c.k.data(), {c.B, c.Hkv, c.Lk, 8});
  c.expect_error({"k: dim 3 (D) must be 16, got 8"});
}

TEST(BadInput, MismatchedBatch) {
  Call c;
  c.vv = view(c.v.data(), {1, c.Hkv, c.Lk, c.Dv});
  c.expect_error({"v: dim 0 (B) must be 2, got 1"});
}

TEST(BadInput, KeysAndValuesOfDifferentLength) {
  Call c;
  c.vv = view(c.v.data(), {c.B, c.Hkv, 4, c.Dv});
  c.expect_error({"v: dim 2 (Lk) must be 8, got 4"});
}

TEST(BadInput, QueryHeadsNotAMultipleOfKvHeads) {
  Call c;
  c.kv = view(c.k.data(), {c.B, 3, c.Lk, c.D});
  c.vv = view(c.v.data(), {c.B, 3, c.Lk, c.Dv});
  c.expect_error({"Hq = 4 must be a multiple of k's Hkv = 3"});
}

TEST(BadInput, WrongRank) {
  Call c;
  c.qv = view(c.q.data(), {c.B * c.Hq, c.Lq, c.D});
  c.expect_error({"q: expected shape [B, Hq, Lq, D] of rank 4, got shape [8, 5, 16]"});
}

// Zero counts (B, H, Lq, Lk) are valid, empty problems (edge_cases_test.cc); a zero feature
// width is not: it has no default scale 1/√D and no use.
TEST(BadInput, ZeroHeadDim) {
  Call c;
  c.qv.layout.shape[3] = 0;
  c.expect_error({"q: dim 3 (D) must be positive, got 0"});
}

TEST(BadInput, NegativeSize) {
  Call c;
  c.kv.layout.shape[3] = -16;
  c.expect_error({"k: dim 3 (D) must be positive, got -16"});
}

TEST(BadInput, KvLensOutOfRange) {
  Call c;
  const int64_t lens[] = {3, 9};
  c.params.kv_lens = lens;
  c.expect_error({"kv_lens[1] = 9 is out of range [0, Lk = 8]"});
}

TEST(BadInput, KvLensWrongCount) {
  Call c;
  const int64_t lens[] = {3};
  c.params.kv_lens = lens;
  c.expect_error({"kv_lens: expected 2 entries (one per batch), got 1"});
}

TEST(BadInput, QLensNegative) {
  Call c;
  const int64_t lens[] = {-1, 2};
  c.params.q_lens = lens;
  c.expect_error({"q_lens[0] = -1 is out of range [0, Lq = 5]"});
}

TEST(BadInput, MaskThatDoesNotBroadcast) {
  Call c;
  std::vector<uint8_t> mask(3 * 8, 1);
  c.params.mask = {mask.data(), DType::kBool, Layout::contiguous({3, 8})};
  c.expect_error({"mask: dim 0 has size 3, which does not broadcast to Lq = 5"});
}

TEST(BadInput, MaskOfUnsupportedRank) {
  Call c;
  std::vector<uint8_t> mask(1, 1);
  c.params.mask = {mask.data(), DType::kBool, Layout{}};
  c.expect_error({"mask: expected rank 1 to 4"});
}

TEST(BadInput, UnsupportedDtype) {
  Call c;
  c.qv.dtype = DType::kBool;
  c.expect_error({"q: dtype must be float32, float16 or bfloat16, got bool"});
}

TEST(BadInput, MixedInputDtypes) {
  Call c;
  c.vv.dtype = DType::kF16;
  c.expect_error({"v: dtype must match q's float32, got float16"});
}

TEST(BadInput, OutputDtypeNeitherF32NorInputs) {
  Call c;
  c.outputs.out.dtype = DType::kBF16;
  c.expect_error({"out: dtype must be float32 or the inputs' dtype float32, got bfloat16"});
}

TEST(BadInput, NullData) {
  Call c;
  c.kv.data = nullptr;
  c.expect_error({"k: data is null"});
}

TEST(BadInput, MissingOutput) {
  Call c;
  c.outputs.out.data = nullptr;
  c.expect_error({"out: is required"});
}

TEST(BadInput, OutputShape) {
  Call c;
  c.outputs.lse.layout = Layout::contiguous({c.B, c.Hq, 4});
  c.expect_error({"lse: dim 2 (Lq) must be 5, got 4"});
}

TEST(BadInput, OutputThatWritesOneElementTwice) {
  Call c;
  c.outputs.out.layout.strides[2] = 0;
  c.expect_error({"out: dim 2 has stride 0"});
}

TEST(BadInput, SizesThatOverflowIndexArithmetic) {
  Call c;
  c.qv.layout = Layout::contiguous({int64_t{1} << 40, int64_t{1} << 40, 1, 16});
  c.expect_error({"q: sizes and strides overflow 64-bit index arithmetic"});
}

TEST(BadInput, BadWindow) {
  Call c;
  c.params.window = {-3, 2};
  c.expect_error({"window: (left, right) must each be >= 0, or -1 for unbounded, got (-3, 2)"});
}

TEST(BadInput, NegativeOrNonFiniteSoftcapOrScale) {
  Call c;
  c.params.softcap = -1.0f;
  c.expect_error({"softcap: must be >= 0"});
  Call d;
  d.params.scale = std::numeric_limits<float>::quiet_NaN();
  d.expect_error({"scale: must be finite"});
}

TEST(BadInput, VarlenOffsets) {
  std::vector<float> q(6 * 2 * 4), k(5 * 2 * 4), v(5 * 2 * 4), out(6 * 2 * 4, 42.0f);
  auto call = [&](std::vector<int64_t> cu_q, std::vector<int64_t> cu_k, const char* msg) {
    try {
      attention_varlen(view(q.data(), {6, 2, 4}), view(k.data(), {5, 2, 4}),
                       view(v.data(), {5, 2, 4}), cu_q, cu_k, {}, {view(out.data(), {6, 2, 4})});
      ADD_FAILURE() << "no error for " << msg;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(msg));
    }
    for (float x : out) ASSERT_EQ(x, 42.0f);
  };
  call({0, 4, 3, 6}, {0, 2, 4, 5}, "cu_seqlens_q: offsets must not decrease");
  call({1, 6}, {0, 5}, "cu_seqlens_q[0] must be 0, got 1");
  call({0, 6}, {0, 4}, "cu_seqlens_k[1] = 4 must equal total_k = 5");
  call({0, 3, 6}, {0, 5}, "cu_seqlens_k: expected 3 offsets like cu_seqlens_q, got 2");
}

TEST(BadInput, MergeShapes) {
  std::vector<float> a(2 * 3 * 4), b(2 * 3 * 4), la(6), lb(6), out(24, 42.0f), lse(6, 42.0f);
  try {
    merge(view(a.data(), {2, 3, 4}), view(la.data(), {2, 3}), view(b.data(), {2, 3, 3}),
          view(lb.data(), {2, 3}), view(out.data(), {2, 3, 4}), view(lse.data(), {2, 3}));
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("out_b: shape must equal out_a's shape [2, 3, 4], got [2, 3, 3]"));
  }
  for (float x : out) EXPECT_EQ(x, 42.0f);
}

TEST(BadInput, UnknownSimdTarget) {
  try {
    force_simd_target("AVX9000");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("unknown or unavailable target 'AVX9000'"));
  }
}

}  // namespace
}  // namespace xattn

namespace xattn {
namespace {

// attention_backward's own arguments; q, k, v and params are checked as attention() checks them.
struct BackwardCall : Call {
  std::vector<float> dout = std::vector<float>(B * Hq * Lq * Dv, 1.0f);
  std::vector<float> dq = std::vector<float>(B * Hq * Lq * D, 42.0f);
  std::vector<float> dk = std::vector<float>(B * Hkv * Lk * D, 42.0f);
  std::vector<float> dv = std::vector<float>(B * Hkv * Lk * Dv, 42.0f);
  TensorView doutv = view(dout.data(), {B, Hq, Lq, Dv});
  TensorView outv = view(out.data(), {B, Hq, Lq, Dv});
  TensorView lsev = view(lse.data(), {B, Hq, Lq});
  AttentionGradients grads{view(dq.data(), {B, Hq, Lq, D}), view(dk.data(), {B, Hkv, Lk, D}),
                           view(dv.data(), {B, Hkv, Lk, Dv})};

  void expect_backward_error(std::initializer_list<const char*> fragments) {
    try {
      attention_backward(qv, kv, vv, outv, lsev, doutv, params, grads);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      for (const char* f : fragments) EXPECT_THAT(e.what(), HasSubstr(f));
    }
    for (const std::vector<float>* g : {&dq, &dk, &dv})
      for (float x : *g) ASSERT_EQ(x, 42.0f);
  }
};

TEST(BadInput, BackwardWithoutLse) {
  BackwardCall c;
  c.lsev = {};
  c.expect_backward_error({"lse: is required"});
}

TEST(BadInput, BackwardDoutOfTheWrongShape) {
  BackwardCall c;
  c.doutv = view(c.dout.data(), {c.B, c.Hq, c.Lq, 8});
  c.expect_backward_error({"dout: dim 3 (Dv) must be 16, got 8"});
}

TEST(BadInput, BackwardGradientOfTheWrongShapeOrMissing) {
  BackwardCall c;
  c.grads.dk = view(c.dk.data(), {c.B, c.Hq, c.Lk, c.D});
  c.expect_backward_error({"dk: dim 1 (Hkv) must be 2, got 4"});
  BackwardCall d;
  d.grads.dv = {};
  d.expect_backward_error({"dv: is required"});
}

}  // namespace
}  // namespace xattn

namespace xattn {
namespace {

TEST(BadInput, BackwardMaskGradientWithoutAFloatMask) {
  BackwardCall c;
  std::vector<float> dmask(c.Lq * c.Lk, 42.0f);
  c.grads.dmask = view(dmask.data(), {c.Lq, c.Lk});
  c.expect_backward_error({"dmask: there is no params.mask"});
  std::vector<uint8_t> bools(c.Lq * c.Lk, 1);
  c.params.mask = view(bools.data(), DType::kBool, Layout::contiguous({c.Lq, c.Lk}));
  c.expect_backward_error({"dmask: a bool mask has no gradient"});
  for (float x : dmask) ASSERT_EQ(x, 42.0f);
}

TEST(BadInput, BackwardMaskGradientOfTheWrongShape) {
  BackwardCall c;
  std::vector<float> mask(c.Lq * c.Lk, 0.0f), dmask(c.Lq * c.Lk, 42.0f);
  c.params.mask = view(mask.data(), {c.Lq, c.Lk});
  c.grads.dmask = view(dmask.data(), {c.Lk, c.Lq});
  c.expect_backward_error({"dmask: expected the mask's shape [5, 8], got shape [8, 5]"});
  for (float x : dmask) ASSERT_EQ(x, 42.0f);
}

// validate_attention: the same verdict and message as attention(), and never a write.
TEST(BadInput, ValidateAttentionAgreesWithAttentionAndWritesNothing) {
  std::vector<float> q(2 * 4 * 3, 0.5f), k(2 * 5 * 3, 0.25f), v(2 * 5 * 3, 1.0f),
      out(2 * 4 * 3, 42.0f), lse(2 * 4, 42.0f);
  AttentionParams p;
  const AttentionOutputs o{view(out.data(), {1, 2, 4, 3}), view(lse.data(), {1, 2, 4})};
  validate_attention(view(q.data(), {1, 2, 4, 3}), view(k.data(), {1, 2, 5, 3}),
                     view(v.data(), {1, 2, 5, 3}), p, o);
  for (float x : out) ASSERT_EQ(x, 42.0f);
  for (float x : lse) ASSERT_EQ(x, 42.0f);
  p.window = {-3, 0};
  std::string from_attention, from_validate;
  try {
    attention(view(q.data(), {1, 2, 4, 3}), view(k.data(), {1, 2, 5, 3}),
              view(v.data(), {1, 2, 5, 3}), p, o);
  } catch (const Error& e) {
    from_attention = e.what();
  }
  try {
    validate_attention(view(q.data(), {1, 2, 4, 3}), view(k.data(), {1, 2, 5, 3}),
                       view(v.data(), {1, 2, 5, 3}), p, o);
  } catch (const Error& e) {
    from_validate = e.what();
  }
  EXPECT_THAT(from_validate, ::testing::HasSubstr("window:"));
  EXPECT_EQ(from_validate, from_attention);
}

}  // namespace
}  // namespace xattn
