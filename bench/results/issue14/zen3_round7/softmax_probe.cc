#include <chrono>
#include <cstdio>
#include <vector>
template <class T> struct AA { using value_type = T; AA() = default; template <class U> AA(const AA<U>&) {} T* allocate(size_t n) { return static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64)); } void deallocate(T* p, size_t) { std::free(p); } bool operator==(const AA&) const { return true; } };
#include <cstdlib>
#include <algorithm>
#include "kernels/score_tile-inl.h"
namespace hn = hwy::HWY_NAMESPACE;
using namespace xattn::kernels::HWY_NAMESPACE;
int main() {
  constexpr int R = KV;
  const int64_t N = hn::Lanes(hn::ScalableTag<float>()), br = R * N, nk = 128;
  std::vector<float, AA<float>> st0(nk * br), st(nk * br), m(br), l(br), a(br);
  for (size_t i = 0; i < st0.size(); ++i) st0[i] = (float)((i * 7919) % 1000) * 0.01f - 5;
  double best = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < 2000; ++it) {
      std::copy(st0.begin(), st0.end(), st.begin());
      std::fill(m.begin(), m.end(), -1e30f); std::fill(l.begin(), l.end(), 0.f);
      online_softmax_tile<R>(st.data(), br, nk, m.data(), l.data(), a.data());
    }
    double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 2000 / (nk * R);
    best = std::min(best, ns);
  }
  // copy cost alone
  double bc = 1e9;
  for (int rep = 0; rep < 30; ++rep) {
    auto t0 = std::chrono::steady_clock::now();
    for (int it = 0; it < 2000; ++it) { std::copy(st0.begin(), st0.end(), st.begin()); asm volatile("" ::"r"(st.data()) : "memory"); }
    double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() / 2000 / (nk * R);
    bc = std::min(bc, ns);
  }
  printf("%s: %.3f ns per vector (copy %.3f)\n", hwy::TargetName(HWY_TARGET), best - bc, bc);
}
