"""The CPU kernels of the attention block (paged attention, RoPE): small C functions built with
the system compiler, called through ctypes on the tensors' memory.

``paged_attention_cpu`` attends every query token of a step (prefill chunks and decodes alike)
to its sequence's context where the context lives, in the paged cache, following the block table:
no per-step gather into a padded tensor, one call per layer. Per (sequence, tile of up to 16
queries) it walks the sequence's blocks in order with an online softmax (flash-attention style),
all KV heads of a block before the next block, so that each block is read from memory once, in
whole token rows, while the next one is prefetched (one pass per KV head read a third of every
token row and ran at a third of the bandwidth). Per KV head, a block's K is transposed (8 x 8
register tiles) into a 4 KiB scratch tile so that the scores of all the tile's rows (queries x
the head's GQA group) are vector FMAs over the block's tokens, and the P.V update is a vector FMA
over the head dimension; a row's softmax denominator is kept lane by lane and summed once at the
end. A row's result depends only on its own sequence (batch-composition invariant), so every
layout computes exactly what the single process does.

Measured on the shared 2-core Xeon (64 sequences x 438 tokens of SmolLM2-135M heads, one layer,
43 MB of K/V): one pass per head took 12.95 ms wall-clock (3.3 GB/s), all heads per block 5.2 ms
in the same run; after the register transposes and lane-wise sums, 3.45 ms of thread CPU time
(~12.5 GB/s, this core's read bandwidth). The commits that made each change give its A/B figures.

The same library holds ``rope_qk_cpu``: RoPE of the Q and K heads of the fused QKV projection in
one pass (torch's version is four multiplications and two sums over strided half-heads per
tensor: in a prefill step of 8 x 512 tokens of SmolLM2-135M, aten::mul took 417 ms of thread CPU
time over 371 calls, sub_/add_ another ~60 ms; with the fused pass, mul 149 ms over the 131 calls
left and no sub_, profiled with torch.profiler on the shared machine). Each product and sum is
rounded on its own (no FMA contraction), so its bits are the torch path's, and a rank's tokens
do not depend on which path it takes.

``silu_mul_cpu`` is SwiGLU's ``silu(gate) * up`` in one pass over the fused gate/up output (torch:
``silu_`` then ``mul_``, two passes over [T, I]; [4096, 2 x 1536]: 8.6 -> 6.4 ms, best of 10);
its exp is the kernel's, so its bits differ from torch's by rounding (within 3e-6 relative of a
float64 reference), the same on every rank and layout.

The C source is compiled once per machine (``cc -O3 -march=native``) into
``$SEESAW_CACHE_DIR`` (default ``~/.cache/seesaw``) under a name keyed by the source and the
host, written atomically so that ranks starting together do not race. Without a compiler, or with
``SEESAW_CPU_KERNEL=0``, ``available()`` is False and attention falls back to the portable torch
path (``seesaw.engine.attention``). fp32 only; single-threaded (the engine runs one torch thread
per CPU rank).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["applies", "available", "paged_attention_cpu", "rms_norm_cpu", "rope_qk_cpu", "silu_mul_cpu",
           "store_kv_cpu"]

log = logging.getLogger(__name__)

_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define QT 16 /* queries of one sequence attended together */
#define W 16  /* floats per vector chunk: one AVX-512 register, two AVX2 ones */

/* exp(x) for x <= 0: 2^k * e^y, y = x - k ln2 in [-ln2/2, ln2/2], Taylor to y^6 (rel. error
   ~1e-7); plain arithmetic so that the compiler vectorizes the softmax loops. */
static inline float exp_neg(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float k = rintf(x * 1.44269504f), y = x - k * 0.693147181f;
  const float p = 1.0f + y * (1.0f + y * (0.5f + y * (0.166666667f + y * (0.0416666667f +
                  y * (0.00833333333f + y * 0.00138888889f)))));
  int32_t bits = ((int32_t)k + 127) << 23;
  float two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}

/* scores of R rows against a transposed K block: s[j][t] = q_j . k_t */
static inline __attribute__((always_inline)) void scores(const float **qp, const float *ktb, float *sc,
                                                         const int R, int64_t d, int64_t nt, int64_t bsp) {
  for (int64_t t0 = 0; t0 < nt; t0 += W) {
    float x[8][W];
    for (int j = 0; j < R; j++)
      for (int t = 0; t < W; t++) x[j][t] = 0.0f;
    for (int64_t c = 0; c < d; c++) {
      const float *kt = ktb + c * bsp + t0;
      for (int j = 0; j < R; j++) {
        const float a = qp[j][c];
#pragma omp simd
        for (int t = 0; t < W; t++) x[j][t] += a * kt[t];
      }
    }
    for (int j = 0; j < R; j++) memcpy(sc + j * bsp + t0, x[j], sizeof x[j]);
  }
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define HAVE_SHUFFLE 1
#endif
#endif

#ifdef HAVE_SHUFFLE
typedef float v8 __attribute__((vector_size(32)));
#define SHUF __builtin_shufflevector

/* an 8 x 8 tile: 8 tokens' channels c0..c0+7 (token i at src + i * tok) -> 8 rows of dst (channel
   j at dst + j * bsp), in registers (three rounds of shuffles) */
static inline __attribute__((always_inline)) void transpose8(const float *src, int64_t tok, float *dst,
                                                             int64_t bsp) {
  v8 r[8], t[8], u[8];
  for (int i = 0; i < 8; i++) memcpy(&r[i], src + i * tok, sizeof(v8));
  for (int i = 0; i < 8; i += 2) {
    t[i] = SHUF(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = SHUF(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4) {
    u[i] = SHUF(t[i], t[i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 1] = SHUF(t[i], t[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[i + 2] = SHUF(t[i + 1], t[i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[i + 3] = SHUF(t[i + 1], t[i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int j = 0; j < 4; j++) {
    const v8 lo = SHUF(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    const v8 hi = SHUF(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
    memcpy(dst + j * bsp, &lo, sizeof lo);
    memcpy(dst + (j + 4) * bsp, &hi, sizeof hi);
  }
}
#endif

/* ktb[c][t] = k_t[c] for the nt tokens of a block (token t at kb + t * tok): 8 x 8 register
   tiles where the compiler has vector shuffles and nt is a multiple of 8, else element by element */
static inline __attribute__((always_inline)) void transpose(const float *restrict kb, float *restrict ktb,
                                                            int64_t d, int64_t nt, int64_t tok, int64_t bsp) {
#ifdef HAVE_SHUFFLE
  if (nt % 8 == 0) {
    for (int64_t t0 = 0; t0 < nt; t0 += 8)
      for (int64_t c0 = 0; c0 < d; c0 += 8) transpose8(kb + t0 * tok + c0, tok, ktb + c0 * bsp + t0, bsp);
    return;
  }
#endif
  for (int64_t c = 0; c < d; c++)
    for (int64_t t = 0; t < nt; t++) ktb[c * bsp + t] = kb[t * tok + c];
}

/* acc[j] = acc[j] * alpha[j] + sum_t p[j][t] v_t for R rows */
static inline __attribute__((always_inline)) void pv(float *acc, const float *alpha, const float *sc,
                                                     const float *vb, const int R, int64_t d, int64_t tr,
                                                     int64_t tok, int64_t bsp) {
  for (int64_t c0 = 0; c0 < d; c0 += W) {
    float y[8][W];
    for (int j = 0; j < R; j++)
#pragma omp simd
      for (int c = 0; c < W; c++) y[j][c] = acc[j * d + c0 + c] * alpha[j];
    for (int64_t t = 0; t < tr; t++) {
      const float *vt = vb + t * tok + c0;
      for (int j = 0; j < R; j++) {
        const float p = sc[j * bsp + t];
#pragma omp simd
        for (int c = 0; c < W; c++) y[j][c] += p * vt[c];
      }
    }
    for (int j = 0; j < R; j++) memcpy(acc + j * d + c0, y[j], sizeof y[j]);
  }
}

/* q [T, hq, d], caches [blocks, bs, hkv, d], out [T, hq, d]; cu_q [S+1], ctx [S] int32,
   table [S, tstride] int32. Query i of sequence s sits at position ctx[s] - n + i and sees
   positions 0..that. Per KV head h, row r of a tile = query r / g, head h*g + r % g (GQA:
   g = hq / hkv); rows are padded to a multiple of 4 by repeating the last (its results are not
   stored). The KV heads are the inner loop, so that each block of the context is read from
   memory once (whole token rows, contiguous) for all of them, and the next block is prefetched
   while this one is worked on. */
int seesaw_paged_attention_f32(const float *q, const float *kc, const float *vc,
                               const int32_t *cu_q, const int32_t *ctx, const int32_t *table,
                               int64_t S, int64_t tstride, int64_t hq, int64_t hkv, int64_t d,
                               int64_t bs, float scale, float *out) {
  const int64_t g = hq / hkv, rows_max = QT * g + 8, tok = hkv * d, bsp = (bs + W - 1) / W * W;
  const int64_t hr = hkv * rows_max; /* per-head state, head h at h * rows_max */
  if (d % W) return 2;
  float *ktb = calloc(d * bsp + rows_max * bsp + hr * d + hr + rows_max + hr * bsp, sizeof(float));
  const float **qp = malloc(sizeof(float *) * hr);
  int64_t *vis = malloc(sizeof(int64_t) * rows_max);
  if (!ktb || !qp || !vis) { free(ktb); free(qp); free(vis); return 1; }
  float *sc = ktb + d * bsp, *acc0 = sc + rows_max * bsp, *m0 = acc0 + hr * d, *alpha = m0 + hr;
  float *lv0 = alpha + rows_max; /* a row's softmax sums, lane by lane */
  for (int64_t s = 0; s < S; s++) {
    const int64_t q0s = cu_q[s], n = cu_q[s + 1] - cu_q[s], first = ctx[s] - n;
    const int32_t *tab = table + s * tstride;
    for (int64_t i0 = 0; i0 < n; i0 += QT) {
      const int64_t nq = n - i0 < QT ? n - i0 : QT, rows = nq * g;
      const int64_t padded = (rows + 3) / 4 * 4;
      const int64_t pos0 = first + i0, last = pos0 + nq - 1, nblocks = last / bs + 1;
      for (int64_t h = 0; h < hkv; h++)
        for (int64_t r = 0; r < padded; r++) {
          const int64_t rr = r < rows ? r : rows - 1, x = h * rows_max + r;
          qp[x] = q + ((q0s + i0 + rr / g) * hq + h * g + rr % g) * d;
          m0[x] = -INFINITY;
          memset(lv0 + x * bsp, 0, sizeof(float) * bsp);
          memset(acc0 + x * d, 0, sizeof(float) * d);
        }
      for (int64_t b = 0; b < nblocks; b++) {
        const int64_t base = b * bs, nt = base + bs > last + 1 ? last + 1 - base : bs;
        if (i0 == 0 && b + 1 < nblocks) { /* the next block's K and V rows (later tiles find them in cache) */
          const char *kn = (const char *)(kc + (int64_t)tab[b + 1] * bs * tok);
          const char *vn = (const char *)(vc + (int64_t)tab[b + 1] * bs * tok);
          for (int64_t off = 0; off < (int64_t)(bs * tok * sizeof(float)); off += 64) {
            __builtin_prefetch(kn + off);
            __builtin_prefetch(vn + off);
          }
        }
        for (int64_t h = 0; h < hkv; h++) {
          const float *kb = kc + ((int64_t)tab[b] * bs * hkv + h) * d;
          const float *vb = vc + ((int64_t)tab[b] * bs * hkv + h) * d;
          const float **qh = qp + h * rows_max;
          float *acc = acc0 + h * rows_max * d, *m = m0 + h * rows_max, *lv = lv0 + h * rows_max * bsp;
          transpose(kb, ktb, d, nt, tok, bsp);
          for (int64_t r = 0; r < padded;) { /* scores: each K column load feeds 8 or 4 rows */
            if (padded - r >= 8) { scores(qh + r, ktb, sc + r * bsp, 8, d, nt, bsp); r += 8; }
            else { scores(qh + r, ktb, sc + r * bsp, 4, d, nt, bsp); r += 4; }
          }
          for (int64_t r = 0; r < padded; r++) { /* online softmax; masked and skipped: p = 0 */
            const int64_t rr = r < rows ? r : rows - 1, v0 = pos0 + rr / g - base + 1;
            const int64_t vr = v0 < 0 ? 0 : (v0 < nt ? v0 : nt);
            float *sr = sc + r * bsp;
            vis[r] = vr;
            if (vr == 0) {
              alpha[r] = 1.0f;
              for (int64_t t = 0; t < bsp; t++) sr[t] = 0.0f;
              continue;
            }
            float mx = m[r];
#pragma omp simd reduction(max : mx)
            for (int64_t t = 0; t < vr; t++) {
              sr[t] *= scale;
              mx = sr[t] > mx ? sr[t] : mx;
            }
#pragma omp simd
            for (int64_t t = 0; t < vr; t++) sr[t] = exp_neg(sr[t] - mx);
            for (int64_t t = vr; t < bsp; t++) sr[t] = 0.0f;
            const float a = m[r] == -INFINITY ? 0.0f : exp_neg(m[r] - mx);
            float *lr = lv + r * bsp; /* summed across lanes once, at the end of the context */
#pragma omp simd
            for (int64_t t = 0; t < bsp; t++) lr[t] = lr[t] * a + sr[t];
            alpha[r] = a;
            m[r] = mx;
          }
          for (int64_t r = 0; r < padded;) { /* P.V: each V row load feeds 8 or 4 rows */
            const int nr = padded - r >= 8 ? 8 : 4;
            int64_t tr = 0;
            for (int j = 0; j < nr; j++) tr = vis[r + j] > tr ? vis[r + j] : tr;
            if (nr == 8) pv(acc + r * d, alpha + r, sc + r * bsp, vb, 8, d, tr, tok, bsp);
            else pv(acc + r * d, alpha + r, sc + r * bsp, vb, 4, d, tr, tok, bsp);
            r += nr;
          }
        }
      }
      for (int64_t h = 0; h < hkv; h++)
        for (int64_t r = 0; r < rows; r++) {
          const int64_t x = h * rows_max + r;
          float *o = out + ((q0s + i0 + r / g) * hq + h * g + r % g) * d;
          float l = 0.0f;
          for (int64_t t = 0; t < bsp; t++) l += lv0[x * bsp + t];
          const float inv = 1.0f / l;
          for (int64_t c = 0; c < d; c++) o[c] = acc0[x * d + c] * inv;
        }
    }
  }
  free(ktb);
  free(qp);
  free(vis);
  return 0;
}

/* The step's new K and V rows into the paged caches: row t of k/v [T, row] (row = hkv * d floats,
   row strides ldk, ldv) to slot slots[t] of k_cache/v_cache [slots, row]. */
void seesaw_store_kv_f32(const float *k, const float *v, int64_t ldk, int64_t ldv, const int64_t *slots,
                         int64_t T, int64_t row, float *kc, float *vc) {
  for (int64_t t = 0; t < T; t++) {
    memcpy(kc + slots[t] * row, k + t * ldk, sizeof(float) * row);
    memcpy(vc + slots[t] * row, v + t * ldv, sizeof(float) * row);
  }
}

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
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-shared", "-fPIC"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # 512-bit vectors where the CPU has them (GCC prefers 256 on Intel's AVX-512 parts): one
    # layer's causal attention of 8 x 512 tokens (SmolLM2-135M heads, thread CPU, best of 10),
    # alternating builds: 42.1/43.6/44.2 -> 36.9/37.8/38.7 ms; decode of 64 x 438 tokens over
    # 30 layers' K/V (1.3 GB, from memory) unchanged: 152.8/169.0 vs 155.0/159.6 ms
    _FLAGS.insert(2, "-mprefer-vector-width=512")
_lib: ctypes.CDLL | None | bool = None  # None: not tried yet; False: unavailable


def _cache_dir() -> Path:
    return Path(os.environ.get("SEESAW_CACHE_DIR") or Path.home() / ".cache" / "seesaw")


def _build() -> ctypes.CDLL | bool:
    if os.environ.get("SEESAW_CPU_KERNEL", "1") == "0":
        return False
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        log.warning("no C compiler found: CPU attention uses the portable torch path")
        return False
    key = hashlib.sha256((_SOURCE + " ".join(_FLAGS) + platform.node() + platform.machine()).encode()).hexdigest()
    so = _cache_dir() / f"paged_attention_{key[:16]}.so"
    try:
        if not so.exists():
            so.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
                src = Path(tmp) / "paged_attention.c"
                src.write_text(_SOURCE)
                out = Path(tmp) / so.name
                subprocess.run([cc, *_FLAGS, str(src), "-o", str(out), "-lm"], check=True,
                               capture_output=True, timeout=120)
                os.replace(out, so)  # atomic: ranks building at once each install a whole file
        lib = ctypes.CDLL(str(so))
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("CPU attention kernel unavailable (%s): using the portable torch path", e)
        return False
    fn = lib.seesaw_paged_attention_f32
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 6 + [ctypes.c_int64] * 6 + [ctypes.c_float, ctypes.c_void_p]
    store = lib.seesaw_store_kv_f32
    store.restype = None
    store.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 2 + [ctypes.c_void_p] + [ctypes.c_int64] * 2 + \
        [ctypes.c_void_p] * 2
    norm = lib.seesaw_rms_norm_f32
    norm.restype = None
    norm.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3 + [ctypes.c_void_p, ctypes.c_float, ctypes.c_void_p]
    silu = lib.seesaw_silu_mul_f32
    silu.restype = None
    silu.argtypes = [ctypes.c_void_p] + [ctypes.c_int64] * 3
    rope = lib.seesaw_rope_f32
    rope.restype = None
    rope.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 4 + \
        [ctypes.c_void_p] * 2
    return lib


def applies(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether tensors of ``dtype`` on ``device`` go through these kernels (fp32 on the CPU, built)."""
    return device.type == "cpu" and dtype == torch.float32 and available()


def available() -> bool:
    """Whether the compiled kernel can be used (built on the first call)."""
    global _lib
    if _lib is None:
        _lib = _build()
    return _lib is not False


def paged_attention_cpu(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, cu_query: torch.Tensor,
                        context_lens: torch.Tensor, block_table: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of a varlen batch over the paged cache. q [T, Hq, d] fp32; caches
    [blocks, block_size, Hkv, d] fp32 (the step's K/V already written); cu_query [S+1],
    context_lens [S] and block_table [S, max_blocks] int32. Returns [T, Hq, d]."""
    assert available() and q.dtype == k_cache.dtype == torch.float32
    q = q.contiguous()
    out = torch.empty_like(q)
    S, width = block_table.shape
    _, bs, h_kv, d = k_cache.shape
    rc = _lib.seesaw_paged_attention_f32(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), cu_query.data_ptr(), context_lens.data_ptr(),
        block_table.data_ptr(), S, width, q.shape[1], h_kv, d, bs, scale, out.data_ptr())
    if rc:
        raise MemoryError("CPU attention kernel: out of memory for its scratch tile")
    return out


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
    _lib.seesaw_rope_f32(qkv.data_ptr(), qkv.stride(0), cos.data_ptr(), sin.data_ptr(), T, h_q, h_kv, d,
                         q.data_ptr(), k.data_ptr())
    return q, k


def silu_mul_cpu(gate_up: torch.Tensor, inter: int) -> torch.Tensor:
    """SwiGLU's ``silu(gate) * up`` of a fused gate/up output [T, 2 * inter] fp32 (unit stride along
    its last dim) in one pass, written over the gate half; returns that half, [T, inter]."""
    assert available() and gate_up.dtype == torch.float32 and gate_up.stride(-1) == 1
    _lib.seesaw_silu_mul_f32(gate_up.data_ptr(), gate_up.stride(0), gate_up.shape[0], inter)
    return gate_up[:, :inter]


def store_kv_cpu(k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor, k_cache: torch.Tensor,
                 v_cache: torch.Tensor) -> None:
    """``k_cache.view(-1, Hkv, d)[slot_mapping] = k`` and the same for V, as one call: k/v [T, Hkv, d]
    fp32, slot_mapping [T] int64, caches [blocks, block_size, Hkv, d] (contiguous, else through
    index_put; torch's
    index_put took ~0.1 ms a call even for a decode step's 64 rows: 180 calls, 20 ms, in 3 decode
    steps of SmolLM2-135M; profiled)."""
    assert available() and k.dtype == v.dtype == k_cache.dtype == v_cache.dtype == torch.float32
    T, h_kv, d = k.shape
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and slot_mapping.dtype == torch.int64):
        k_cache.view(-1, h_kv, d)[slot_mapping] = k
        v_cache.view(-1, h_kv, d)[slot_mapping] = v
        return
    k, v = (x if x.stride(2) == 1 and x.stride(1) == d else x.contiguous() for x in (k, v))
    slots = slot_mapping.contiguous()
    _lib.seesaw_store_kv_f32(k.data_ptr(), v.data_ptr(), k.stride(0), v.stride(0), slots.data_ptr(), T, h_kv * d,
                             k_cache.data_ptr(), v_cache.data_ptr())


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x [T, n] fp32 (unit stride along its last dim) with ``weight`` [n] in one pass:
    a new [T, n] tensor. torch's is six passes (pow, mean, add, rsqrt, two products)."""
    assert available() and x.dtype == weight.dtype == torch.float32 and x.dim() == 2 and x.stride(1) == 1
    T, n = x.shape
    w = weight.contiguous()
    out = torch.empty(T, n, dtype=x.dtype)
    _lib.seesaw_rms_norm_f32(x.data_ptr(), x.stride(0), T, n, w.data_ptr(), eps, out.data_ptr())
    return out
