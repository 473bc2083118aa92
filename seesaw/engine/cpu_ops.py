"""The CPU kernels of a decoder layer's element-wise work, each one pass where torch makes several:
RoPE of Q and K, RMSNorm, SwiGLU's product. Small C functions (built by ``cpu_build``) called
through ctypes on the tensors' memory; the model (``seesaw.engine.model``) takes them for fp32
tensors on the CPU when they are built, its torch code otherwise.

``rope_qk_cpu`` is RoPE of the Q and K heads of the fused QKV projection in one pass (torch's version is four multiplications and two sums over strided half-heads per
tensor: in a prefill step of 8 x 512 tokens of SmolLM2-135M, aten::mul took 417 ms of thread CPU
time over 371 calls, sub_/add_ another ~60 ms; with the fused pass, mul 149 ms over the 131 calls
left and no sub_, profiled with torch.profiler on the shared machine). Each product and sum is
rounded on its own (no FMA contraction), so its bits are the torch path's, and a rank's tokens
do not depend on which path it takes.

``silu_mul_cpu`` is SwiGLU's ``silu(gate) * up`` in one pass over the fused gate/up output (torch:
``silu_`` then ``mul_``, two passes over [T, I]; [4096, 2 x 1536]: 8.6 -> 6.4 ms, best of 10);
its exp is the kernel's, so its bits differ from torch's by rounding (within 3e-6 relative of a
float64 reference), the same on every rank and layout.

``rms_norm_cpu`` is RMSNorm in one pass (torch: pow, mean, add, rsqrt and two products): its sum
of squares is summed in another order than torch's, so its bits differ by rounding (within
3.1e-7 relative of a float64 reference, torch's 2.7e-7), the same on every rank and layout.
"""

from __future__ import annotations

import ctypes

import torch

from seesaw.engine import cpu_build

__all__ = ["applies", "available", "rms_norm_cpu", "rope_qk_cpu", "silu_mul_cpu"]

_SOURCE = r"""
/* RMSNorm of the rows of x [T, n] (row stride ld) into out [T, n]: x * (1 / sqrt(mean(x^2) + eps))
   * w, the sum of squares in W lanes summed once at the end of the row, the two products rounded
   one by one in HF's order. */
__attribute__((optimize("fp-contract=off")))
void seesaw_rms_norm_f32(const float *x, int64_t ld, int64_t T, int64_t n, const float *w, float eps,
                         float *out) {
  for (int64_t t = 0; t < T; t++) {
    const float *xr = x + t * ld;
    float *o = out + t * n;
    float lanes[W] = {0.0f}, ss = 0.0f;
    int64_t i = 0;
    for (; i + W <= n; i += W)
#pragma omp simd
      for (int c = 0; c < W; c++) lanes[c] += xr[i + c] * xr[i + c];
    for (; i < n; i++) lanes[0] += xr[i] * xr[i];
    for (int c = 0; c < W; c++) ss += lanes[c];
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
      const float y = xr[j] * r;
      o[j] = y * w[j];
    }
  }
}

/* SwiGLU's gate in place: g[t][i] = silu(g[t][i]) * u[t][i] for the gate g and up u halves of a
   fused gate/up output x [T, ld] (g at column 0, u at column inter). silu(g) = g / (1 + e^-g),
   with e^-|g| from exp_neg so that it never overflows (g < 0: g e^g / (1 + e^g)). */
void seesaw_silu_mul_f32(float *x, int64_t ld, int64_t T, int64_t inter) {
  for (int64_t t = 0; t < T; t++) {
    float *g = x + t * ld;
    const float *u = g + inter;
#pragma omp simd
    for (int64_t i = 0; i < inter; i++) {
      const float a = g[i], e = exp_neg(a < 0.0f ? a : -a);
      const float sig = (a < 0.0f ? e : 1.0f) / (1.0f + e);
      g[i] = a * sig * u[i];
    }
  }
}

/* RoPE, HF's rotate_half layout, of the Q and K heads of a fused QKV projection in one pass:
   x [T, ld] (head h at x + t * ld + h * d), cos/sin [T, d/2]; heads 0..hq-1 -> oq [T, hq, d],
   heads hq..hq+hk-1 -> ok [T, hk, d]. Each product and sum is rounded on its own, as torch's
   mul/sub/add compute them (no FMA contraction), so the bits equal the torch path's. */
__attribute__((optimize("fp-contract=off")))
void seesaw_rope_f32(const float *x, int64_t ld, const float *cs, const float *sn, int64_t T, int64_t hq,
                     int64_t hk, int64_t d, float *oq, float *ok) {
  const int64_t half = d / 2;
  for (int64_t t = 0; t < T; t++) {
    const float *c = cs + t * half, *s = sn + t * half;
    for (int64_t h = 0; h < hq + hk; h++) {
      const float *a = x + t * ld + h * d;
      float *o = h < hq ? oq + (t * hq + h) * d : ok + (t * hk + h - hq) * d;
      for (int64_t i = 0; i < half; i++) {
        const float p = a[i] * c[i];
        const float r = a[i + half] * s[i];
        o[i] = p - r;
      }
      for (int64_t i = 0; i < half; i++) {
        const float p = a[i + half] * c[i];
        const float r = a[i] * s[i];
        o[i + half] = p + r;
      }
    }
  }
}"""
_KERNELS = cpu_build.Kernels("layer_ops", _SOURCE, "the model's element-wise work", {
    "seesaw_rms_norm_f32": (None, [ctypes.c_void_p] + [ctypes.c_int64] * 3
                            + [ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p]),
    "seesaw_silu_mul_f32": (None, [ctypes.c_void_p] + [ctypes.c_int64] * 3),
    "seesaw_rope_f32": (None, [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
                        + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 2),
})
available, applies = _KERNELS.available, _KERNELS.applies


def rope_qk_cpu(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, h_q: int, h_kv: int,
                d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE of the Q and K heads of a fused QKV output in one pass: qkv [T, >= (Hq + Hkv) d] fp32
    with unit stride along its last dim; cos/sin [T, 1, d/2] (or [T, d/2]) fp32. Returns new
    contiguous q [T, Hq, d] and k [T, Hkv, d], bit for bit what ``model``'s torch RoPE computes."""
    assert available() and qkv.dtype == cos.dtype == sin.dtype == torch.float32 and qkv.stride(-1) == 1
    T = qkv.shape[0]
    cos, sin = cos.reshape(T, d // 2).contiguous(), sin.reshape(T, d // 2).contiguous()
    q = torch.empty(T, h_q, d, dtype=qkv.dtype)
    k = torch.empty(T, h_kv, d, dtype=qkv.dtype)
    _KERNELS.lib.seesaw_rope_f32(qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr(), T, h_q, h_kv, d,
                         q.data_ptr(), k.data_ptr())
    return q, k


def silu_mul_cpu(gate_up: torch.Tensor, inter: int) -> torch.Tensor:
    """SwiGLU's ``silu(gate) * up`` of a fused gate/up output [T, 2 * inter] fp32 (unit stride along
    its last dim) in one pass, written over the gate half; returns that half, [T, inter]."""
    assert available() and gate_up.dtype == torch.float32 and gate_up.stride(-1) == 1
    _KERNELS.lib.seesaw_silu_mul_f32(gate_up.data_ptr(), gate_up.stride(0), gate_up.shape[0], inter)
    return gate_up[:, :inter]


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x [T, n] fp32 (unit stride along its last dim) with ``weight`` [n] in one pass:
    a new [T, n] tensor. torch's is six passes (pow, mean, add, rsqrt, two products)."""
    assert available() and x.dtype == weight.dtype == torch.float32 and x.dim() == 2 and x.stride(1) == 1
    T, n = x.shape
    w = weight.contiguous()
    out = torch.empty(T, n, dtype=x.dtype)
    _KERNELS.lib.seesaw_rms_norm_f32(x.data_ptr(), x.stride(0), T, n, w.data_ptr(), eps, out.data_ptr())
    return out
