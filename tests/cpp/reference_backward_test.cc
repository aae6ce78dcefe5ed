// The float64 oracle's gradients against central finite differences of the oracle's forward,
// over random configurations with every feature (masks, lengths, causal and windows, softcap,
// GQA, D != Dv). The backward kernels will be tested against this oracle.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "oracle_util.h"

namespace xattn::testing {
namespace {

constexpr int kCases = 60;
constexpr int kProbesPerTensor = 12;
// Cases above this many score·dim products take too long to difference element by element.
constexpr int64_t kMaxWork = 200000;

// L = Σ dout ⊙ out: the scalar whose gradient attention_backward returns.
double loss(const reference::Problem& p, const std::vector<double>& dout) {
  const reference::Result r = reference::attention(p);
  double l = 0;
  for (size_t i = 0; i < dout.size(); ++i) l += dout[i] * r.out[i];
  return l;
}

// Central difference of the loss in element `i` of the tensor `field` points to.
double numeric_gradient(reference::Problem p, std::vector<double> reference::Problem::*field,
                        size_t i, const std::vector<double>& dout) {
  const double x = (p.*field)[i];
  const double h = 1e-5 * std::max(1.0, std::abs(x));
  (p.*field)[i] = x + h;
  const double up = loss(p, dout);
  (p.*field)[i] = x - h;
  const double down = loss(p, dout);
  return (up - down) / (2 * h);
}

TEST(ReferenceBackward, MatchesFiniteDifferencesOfTheForward) {
  std::mt19937_64 rng(4242);
  std::normal_distribution<double> normal(0.0, 1.0);
  int checked = 0;
  for (int n = 0; checked < kCases && n < 20 * kCases; ++n) {
    const RandomCase c = random_case(rng);
    const reference::Problem& p = c.ref;
    const int64_t work =
        p.batch * p.heads_q * p.q_len * p.kv_len * (p.head_dim + p.value_dim);
    if (work > kMaxWork) continue;
    ++checked;
    std::vector<double> dout(p.batch * p.heads_q * p.q_len * p.value_dim);
    for (double& x : dout) x = normal(rng);
    const reference::Gradients g = reference::attention_backward(p, dout);

    struct Tensor {
      const char* name;
      std::vector<double> reference::Problem::*field;
      const std::vector<double>* grad;
    };
    for (const Tensor& t : {Tensor{"q", &reference::Problem::q, &g.dq},
                            Tensor{"k", &reference::Problem::k, &g.dk},
                            Tensor{"v", &reference::Problem::v, &g.dv},
                            Tensor{"mask", &reference::Problem::mask, &g.dmask}}) {
      const std::vector<double>& values = p.*(t.field);
      if (values.empty()) continue;
      double scale = 1.0;
      for (double x : *t.grad) scale = std::max(scale, std::abs(x));
      std::uniform_int_distribution<size_t> pick(0, values.size() - 1);
      for (int probe = 0; probe < kProbesPerTensor; ++probe) {
        const size_t i = pick(rng);
        if (!std::isfinite(values[i])) continue;  // a -inf mask entry has no derivative
        const double want = numeric_gradient(p, t.field, i, dout);
        EXPECT_NEAR((*t.grad)[i], want, 1e-6 * scale)
            << t.name << "[" << i << "] in case " << n << ": " << c.describe();
      }
    }
  }
  EXPECT_EQ(checked, kCases);
}

}  // namespace
}  // namespace xattn::testing
