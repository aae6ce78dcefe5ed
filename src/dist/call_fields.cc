#include "dist/call_fields.h"

namespace xattn::dist {

OutputDtypes forward_dtypes(const AttentionOutputs& outputs) {
  OutputDtypes t;
  t.out = static_cast<int64_t>(outputs.out.dtype);
  t.lse = outputs.lse.present();
  return t;
}

OutputDtypes backward_dtypes(const TensorView& out, const TensorView& lse, const TensorView& dout,
                             const AttentionGradients& grads) {
  OutputDtypes t;
  t.out = static_cast<int64_t>(out.dtype);
  t.lse = lse.present();
  t.dout = static_cast<int64_t>(dout.dtype);
  t.dq = static_cast<int64_t>(grads.dq.dtype);
  t.dk = static_cast<int64_t>(grads.dk.dtype);
  t.dv = static_cast<int64_t>(grads.dv.dtype);
  return t;
}

int64_t* fill_call_fields(int64_t* x, DType q_dtype, const AttentionParams& p,
                          const OutputDtypes& t) {
  *x++ = static_cast<int64_t>(q_dtype);
  for (int64_t d : {t.out, t.lse, t.dout, t.dq, t.dk, t.dv}) *x++ = d;
  *x++ = p.scale.has_value();
  *x++ = p.scale ? float_bits(*p.scale) : 0;
  *x++ = float_bits(p.softcap);
  *x++ = p.causal;
  *x++ = static_cast<int64_t>(p.align);
  *x++ = p.window.left;
  *x++ = p.window.right;
  *x++ = p.diagonal_offset;
  *x++ = static_cast<int64_t>(p.kv_lens.size());
  *x++ = list_digest(p.kv_lens);
  *x++ = static_cast<int64_t>(p.q_lens.size());
  *x++ = list_digest(p.q_lens);
  *x++ = p.bf16_probabilities;
  return x;
}

}  // namespace xattn::dist
