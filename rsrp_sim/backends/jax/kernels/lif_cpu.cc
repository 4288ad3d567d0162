// The fused ConnSNN environment step for the CPU: an XLA FFI custom call.
//
// One call advances a batch of networks by all substeps of one environment step:
//
//   repeat substeps:
//     rec   = float(popcount(M & s_E) - popcount(M & s_I))         (exact integer, converted once)
//     i_syn = a_syn * i_syn + r_h * rec
//     v     = a_m * v + c_m * ((v_reset + i_syn) + i_in)          c_m  = float32(1 - a_m)
//     spk   = v > v_th ;  v = v_reset where spk
//     r     = a_out * r + (spk ? sign * k_r : 0)                   k_r  = float32(1 - a_out) / dt
//
// These are the float32 operations of SNN._run in rsrp_sim/backends/jax/snn.py in the same order
// ((c_out * sign) / dt equals sign * k_r exactly for sign = +-1; "0 +" is skipped when v_reset is 0,
// as XLA does).  The file is compiled with -ffp-contract=off and without -ffast-math, so the
// compiler changes none of them.  XLA's CPU compiler, however, always lets LLVM fuse a multiply
// and an add into one FMA (there is no flag against it); in the bitpack path's fused loop it
// computes  i_syn = fma(r_h, rec, a_syn * i_syn),  v = fma(a_m, v, c_m * t)  and
// r = fma(a_out, r, s).  With `contract` = 1 this kernel does exactly that, with explicit FMA
// instructions (std::fma on the scalar path), and gives the bitpack path's bits; with
// `contract` = 0 it gives the plain sequence (what XLA computes on a CPU without FMA).
//
// Each network's recurrent mask stays in the L1 cache for all substeps.  It arrives bit-packed
// and word-major: M[w * N + post] holds presynaptic neurons 32 w .. 32 w + 31 of postsynaptic
// neuron `post` (bit k = neuron 32 w + k), so 16 (AVX-512) or 8 (AVX2) postsynaptic neurons are
// one vector load per word.  The spike vector is packed the same way; only words holding a spike
// are visited, each with one popcount (E and I neurons occupy separate bits).
//
// Three code paths give the same bits: AVX-512 with VPOPCNTDQ, AVX2 (nibble-table popcount) and
// portable scalar C++; the best the CPU supports is picked at run time unless one is forced
// (attribute `isa`: 0 best, 1 scalar, 2 AVX2, 3 AVX-512).  Blocks of networks are spread over
// XLA's intra-op thread pool; the calling thread works too, so the call never waits on a busy pool.
//
// Operands may carry leading batch dimensions (jax.vmap with vmap_method="expand_dims"): each
// leading dimension of an operand equals the result's or is 1 (broadcast, e.g. one mask shared
// by every environment of the deterministic network).
#include <algorithm>
#include <cmath>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RSRP_X86 1
#else
#define RSRP_X86 0
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Isa : int64_t { kBest = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3, kFma = 8 };

struct Consts {
  int64_t substeps, n, words, n_exc, contract;
  float a_syn, r_h, a_m, c_m, v_reset, v_th, a_out, k_r;
  int64_t pair_syn = 0;  // real-weight kernel: 0 plain, 1 fma(a_syn, i_syn, r_h rec), 2 fma(r_h, rec, a_syn i_syn)
};

// Per-thread scratch: the spike bits (old and new) and the list of words holding spikes.
struct Work {
  std::vector<uint32_t> s, snew, emask;
  std::vector<int32_t> pos_w, neg_w;
  std::vector<uint32_t> pos_b, neg_b;
  std::vector<float> sign;  // +-k_r: what a spike adds to r before the decay term
  std::vector<float> rec;   // real-weight kernel: the recurrent input of every neuron
  std::vector<int32_t> act; // real-weight kernel: the neurons that spiked, ascending
  std::vector<uint8_t> spk8;
  void resize(const Consts& c) {
    size_t w = static_cast<size_t>(c.words);
    s.assign(w, 0);
    snew.assign(w + 1, 0);  // one spare word: the vector paths store whole half-words / bytes
    emask.assign(w, 0);
    pos_w.resize(w); neg_w.resize(w); pos_b.resize(w); neg_b.resize(w);
    rec.assign(static_cast<size_t>(c.n), 0.0f);
    act.assign(static_cast<size_t>(c.n), 0);
    spk8.assign(static_cast<size_t>(c.n), 0);
    sign.assign(static_cast<size_t>(c.n), c.k_r);
    for (int64_t i = 0; i < c.n; ++i) {
      if (i < c.n_exc) emask[i / 32] |= (1u << (i % 32));
      else sign[i] = -c.k_r;
    }
  }
};

inline int popcount32(uint32_t x) { return __builtin_popcount(x); }

// The words holding spikes, split into excitatory and inhibitory bits.  Returns (n_pos, n_neg).
inline void active_words(const Work& wk, const Consts& c, int64_t* np, int64_t* nn, Work& out) {
  int64_t a = 0, b = 0;
  for (int64_t w = 0; w < c.words; ++w) {
    uint32_t e = wk.s[w] & wk.emask[w];
    uint32_t i = wk.s[w] & ~wk.emask[w];
    if (e) { out.pos_w[a] = static_cast<int32_t>(w); out.pos_b[a] = e; ++a; }
    if (i) { out.neg_w[b] = static_cast<int32_t>(w); out.neg_b[b] = i; ++b; }
  }
  *np = a; *nn = b;
}

// One neuron, scalar: the reference form every vector path reproduces bit for bit.
inline bool neuron_scalar(const uint32_t* M, int64_t post, const Consts& c, const Work& wk, int64_t np, int64_t nn,
                          float iin, float* v, float* isyn, float* r, float sign) {
  int32_t acc = 0;
  for (int64_t k = 0; k < np; ++k) acc += popcount32(M[wk.pos_w[k] * c.n + post] & wk.pos_b[k]);
  for (int64_t k = 0; k < nn; ++k) acc -= popcount32(M[wk.neg_w[k] * c.n + post] & wk.neg_b[k]);
  float rec = static_cast<float>(acc);
  float is, vv, rr;
  if (c.contract) is = std::fma(c.r_h, rec, c.a_syn * *isyn);
  else is = c.a_syn * *isyn + c.r_h * rec;
  float t = c.v_reset == 0.0f ? is + iin : (c.v_reset + is) + iin;
  if (c.contract) vv = std::fma(c.a_m, *v, c.c_m * t);
  else vv = c.a_m * *v + c.c_m * t;
  bool spk = vv > c.v_th;
  if (spk) vv = c.v_reset;
  float s = spk ? sign : 0.0f;
  if (c.contract) rr = std::fma(c.a_out, *r, s);
  else rr = c.a_out * *r + s;
  *v = vv; *isyn = is; *r = rr;
  return spk;
}

// Neurons [from, n) with the scalar form; returns the number of spikes.
inline int32_t tail_scalar(const uint32_t* M, int64_t from, const Consts& c, Work& wk, int64_t np, int64_t nn,
                           const float* iin, float* v, float* isyn, float* r) {
  int32_t count = 0;
  for (int64_t p = from; p < c.n; ++p) {
    if (neuron_scalar(M, p, c, wk, np, nn, iin[p], v + p, isyn + p, r + p, wk.sign[p])) {
      wk.snew[p / 32] |= (1u << (p % 32));
      ++count;
    }
  }
  return count;
}

inline void pack_spikes(const bool* spk, const Consts& c, Work& wk) {
  std::fill(wk.s.begin(), wk.s.end(), 0u);
  for (int64_t i = 0; i < c.n; ++i)
    if (spk[i]) wk.s[i / 32] |= (1u << (i % 32));
}

inline void unpack_spikes(const Work& wk, const Consts& c, bool* spk) {
  for (int64_t i = 0; i < c.n; ++i) spk[i] = (wk.s[i / 32] >> (i % 32)) & 1u;
}

// ------------------------------------------------------------------------------------------ scalar
int32_t run_scalar(const uint32_t* M, const float* iin, float* v, float* isyn, float* r, Work& wk, const Consts& c) {
  int32_t count = 0;
  for (int64_t step = 0; step < c.substeps; ++step) {
    int64_t np, nn;
    active_words(wk, c, &np, &nn, wk);
    std::fill(wk.snew.begin(), wk.snew.end(), 0u);
    count += tail_scalar(M, 0, c, wk, np, nn, iin, v, isyn, r);
    std::copy(wk.snew.begin(), wk.snew.begin() + c.words, wk.s.begin());
  }
  return count;
}

#if RSRP_X86
// ------------------------------------------------------------------------------------------ AVX2
__attribute__((target("avx2,fma,popcnt"))) inline __m256i popcnt_bytes(__m256i x) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                       0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_and_si256(x, low);
  __m256i hi = _mm256_and_si256(_mm256_srli_epi16(x, 4), low);
  return _mm256_add_epi8(_mm256_shuffle_epi8(lut, lo), _mm256_shuffle_epi8(lut, hi));
}

// Sum of the 4 byte counts of each 32-bit lane.
__attribute__((target("avx2,fma,popcnt"))) inline __m256i widen_bytes(__m256i b) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(b, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}

// Signed count for 8 postsynaptic neurons at `p` over a list of (word, bits).
__attribute__((target("avx2,fma,popcnt"))) inline __m256i count_avx2(const uint32_t* M, int64_t n, int64_t p,
                                                                 const int32_t* w, const uint32_t* b, int64_t k) {
  __m256i total = _mm256_setzero_si256();
  int64_t j = 0;
  while (j < k) {
    int64_t end = std::min(k, j + 31);  // a byte holds at most 31 * 8 = 248
    __m256i acc = _mm256_setzero_si256();
    for (; j < end; ++j) {
      __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(M + w[j] * n + p));
      acc = _mm256_add_epi8(acc, popcnt_bytes(_mm256_and_si256(m, _mm256_set1_epi32(static_cast<int>(b[j])))));
    }
    total = _mm256_add_epi32(total, widen_bytes(acc));
  }
  return total;
}

__attribute__((target("avx2,fma,popcnt"))) int32_t run_avx2(const uint32_t* M, const float* iin, float* v, float* isyn,
                                                         float* r, Work& wk, const Consts& c) {
  const __m256 A_syn = _mm256_set1_ps(c.a_syn), R_h = _mm256_set1_ps(c.r_h), A_m = _mm256_set1_ps(c.a_m),
               C_m = _mm256_set1_ps(c.c_m), V_reset = _mm256_set1_ps(c.v_reset), V_th = _mm256_set1_ps(c.v_th),
               A_out = _mm256_set1_ps(c.a_out);
  const bool fma = c.contract != 0, zero_reset = c.v_reset == 0.0f;
  const int64_t nv = c.n - c.n % 8;
  uint8_t* snew8 = reinterpret_cast<uint8_t*>(wk.snew.data());
  int32_t count = 0;
  for (int64_t step = 0; step < c.substeps; ++step) {
    int64_t np, nn;
    active_words(wk, c, &np, &nn, wk);
    std::fill(wk.snew.begin(), wk.snew.end(), 0u);
    for (int64_t p = 0; p < nv; p += 8) {
      __m256i acc = count_avx2(M, c.n, p, wk.pos_w.data(), wk.pos_b.data(), np);
      if (nn) acc = _mm256_sub_epi32(acc, count_avx2(M, c.n, p, wk.neg_w.data(), wk.neg_b.data(), nn));
      __m256 rec = _mm256_cvtepi32_ps(acc);
      __m256 decay = _mm256_mul_ps(A_syn, _mm256_loadu_ps(isyn + p));
      __m256 is = fma ? _mm256_fmadd_ps(R_h, rec, decay) : _mm256_add_ps(decay, _mm256_mul_ps(R_h, rec));
      __m256 t = zero_reset ? _mm256_add_ps(is, _mm256_loadu_ps(iin + p))
                            : _mm256_add_ps(_mm256_add_ps(V_reset, is), _mm256_loadu_ps(iin + p));
      __m256 drive = _mm256_mul_ps(C_m, t);
      __m256 v0 = _mm256_loadu_ps(v + p);
      __m256 vv = fma ? _mm256_fmadd_ps(A_m, v0, drive) : _mm256_add_ps(_mm256_mul_ps(A_m, v0), drive);
      __m256 mk = _mm256_cmp_ps(vv, V_th, _CMP_GT_OQ);
      vv = _mm256_blendv_ps(vv, V_reset, mk);
      __m256 s = _mm256_and_ps(mk, _mm256_loadu_ps(wk.sign.data() + p));
      __m256 r0 = _mm256_loadu_ps(r + p);
      __m256 rr = fma ? _mm256_fmadd_ps(A_out, r0, s) : _mm256_add_ps(_mm256_mul_ps(A_out, r0), s);
      _mm256_storeu_ps(v + p, vv);
      _mm256_storeu_ps(isyn + p, is);
      _mm256_storeu_ps(r + p, rr);
      int bits = _mm256_movemask_ps(mk);
      snew8[p / 8] = static_cast<uint8_t>(bits);
      count += popcount32(static_cast<uint32_t>(bits));
    }
    count += tail_scalar(M, nv, c, wk, np, nn, iin, v, isyn, r);
    std::copy(wk.snew.begin(), wk.snew.begin() + c.words, wk.s.begin());
  }
  return count;
}

// ------------------------------------------------------------------------------------------ AVX-512
#define RSRP_AVX512 __attribute__((target("avx512f,avx512vpopcntdq,fma,popcnt")))

struct Avx512Consts {
  __m512 a_syn, r_h, a_m, c_m, v_reset, v_th, a_out;
};

// The neuron update of 16 neurons at p from their signed counts; returns the spike mask.
template <bool FMA, bool ZERO_RESET>
RSRP_AVX512 inline __mmask16 update16(__m512i acc, int64_t p, const Avx512Consts& k, const float* iin, float* v,
                                       float* isyn, float* r, const float* sign) {
  __m512 rec = _mm512_cvtepi32_ps(acc);
  __m512 decay = _mm512_mul_ps(k.a_syn, _mm512_loadu_ps(isyn + p));
  __m512 is = FMA ? _mm512_fmadd_ps(k.r_h, rec, decay) : _mm512_add_ps(decay, _mm512_mul_ps(k.r_h, rec));
  __m512 t = ZERO_RESET ? _mm512_add_ps(is, _mm512_loadu_ps(iin + p))
                        : _mm512_add_ps(_mm512_add_ps(k.v_reset, is), _mm512_loadu_ps(iin + p));
  __m512 drive = _mm512_mul_ps(k.c_m, t);
  __m512 v0 = _mm512_loadu_ps(v + p);
  __m512 vv = FMA ? _mm512_fmadd_ps(k.a_m, v0, drive) : _mm512_add_ps(_mm512_mul_ps(k.a_m, v0), drive);
  __mmask16 mk = _mm512_cmp_ps_mask(vv, k.v_th, _CMP_GT_OQ);
  vv = _mm512_mask_mov_ps(vv, mk, k.v_reset);
  __m512 s = _mm512_maskz_mov_ps(mk, _mm512_loadu_ps(sign + p));
  __m512 r0 = _mm512_loadu_ps(r + p);
  __m512 rr = FMA ? _mm512_fmadd_ps(k.a_out, r0, s) : _mm512_add_ps(_mm512_mul_ps(k.a_out, r0), s);
  _mm512_storeu_ps(v + p, vv);
  _mm512_storeu_ps(isyn + p, is);
  _mm512_storeu_ps(r + p, rr);
  return mk;
}

RSRP_AVX512 inline __m512i pop_and(const uint32_t* a, __m512i bits) {
  return _mm512_popcnt_epi32(_mm512_and_si512(_mm512_loadu_si512(a), bits));
}

template <bool FMA, bool ZERO_RESET>
RSRP_AVX512 int32_t run_avx512_t(const uint32_t* M, const float* iin, float* v, float* isyn, float* r, Work& wk,
                                 const Consts& c) {
  const Avx512Consts k{_mm512_set1_ps(c.a_syn), _mm512_set1_ps(c.r_h), _mm512_set1_ps(c.a_m),
                       _mm512_set1_ps(c.c_m), _mm512_set1_ps(c.v_reset), _mm512_set1_ps(c.v_th),
                       _mm512_set1_ps(c.a_out)};
  const int64_t n = c.n;
  const int64_t n32 = n - n % 32, n16 = n - n % 16;
  uint16_t* snew16 = reinterpret_cast<uint16_t*>(wk.snew.data());
  const float* sign = wk.sign.data();
  int32_t count = 0;
  for (int64_t step = 0; step < c.substeps; ++step) {
    int64_t np, nn;
    active_words(wk, c, &np, &nn, wk);
    std::fill(wk.snew.begin(), wk.snew.end(), 0u);
    const int32_t* pw = wk.pos_w.data();
    const int32_t* nw = wk.neg_w.data();
    const uint32_t* pb = wk.pos_b.data();
    const uint32_t* nb = wk.neg_b.data();
    // 32 postsynaptic neurons at a time: each (word, bits) pair is read once for two vectors
    for (int64_t p = 0; p < n32; p += 32) {
      __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
      for (int64_t j = 0; j < np; ++j) {
        const uint32_t* row = M + pw[j] * n + p;
        __m512i b = _mm512_set1_epi32(static_cast<int>(pb[j]));
        a0 = _mm512_add_epi32(a0, pop_and(row, b));
        a1 = _mm512_add_epi32(a1, pop_and(row + 16, b));
      }
      for (int64_t j = 0; j < nn; ++j) {
        const uint32_t* row = M + nw[j] * n + p;
        __m512i b = _mm512_set1_epi32(static_cast<int>(nb[j]));
        a0 = _mm512_sub_epi32(a0, pop_and(row, b));
        a1 = _mm512_sub_epi32(a1, pop_and(row + 16, b));
      }
      __mmask16 m0 = update16<FMA, ZERO_RESET>(a0, p, k, iin, v, isyn, r, sign);
      __mmask16 m1 = update16<FMA, ZERO_RESET>(a1, p + 16, k, iin, v, isyn, r, sign);
      snew16[p / 16] = static_cast<uint16_t>(m0);
      snew16[p / 16 + 1] = static_cast<uint16_t>(m1);
      count += popcount32(static_cast<uint32_t>(m0) | (static_cast<uint32_t>(m1) << 16));
    }
    for (int64_t p = n32; p < n16; p += 16) {
      __m512i a0 = _mm512_setzero_si512();
      for (int64_t j = 0; j < np; ++j)
        a0 = _mm512_add_epi32(a0, pop_and(M + pw[j] * n + p, _mm512_set1_epi32(static_cast<int>(pb[j]))));
      for (int64_t j = 0; j < nn; ++j)
        a0 = _mm512_sub_epi32(a0, pop_and(M + nw[j] * n + p, _mm512_set1_epi32(static_cast<int>(nb[j]))));
      __mmask16 m0 = update16<FMA, ZERO_RESET>(a0, p, k, iin, v, isyn, r, sign);
      snew16[p / 16] = static_cast<uint16_t>(m0);
      count += popcount32(static_cast<uint32_t>(m0));
    }
    count += tail_scalar(M, n16, c, wk, np, nn, iin, v, isyn, r);
    std::copy(wk.snew.begin(), wk.snew.begin() + c.words, wk.s.begin());
  }
  return count;
}

int32_t run_avx512(const uint32_t* M, const float* iin, float* v, float* isyn, float* r, Work& wk, const Consts& c) {
  const bool zr = c.v_reset == 0.0f;
  if (c.contract) return zr ? run_avx512_t<true, true>(M, iin, v, isyn, r, wk, c)
                            : run_avx512_t<true, false>(M, iin, v, isyn, r, wk, c);
  return zr ? run_avx512_t<false, true>(M, iin, v, isyn, r, wk, c) : run_avx512_t<false, false>(M, iin, v, isyn, r, wk, c);
}
#endif  // RSRP_X86

// ------------------------------------------------------------------------------------------ real weights
// DenseSNN (real-valued W[pre][post]): the recurrent input is the sum of the rows of the neurons
// that spiked, added in ascending order of the presynaptic neuron, which is the order in which
// XLA's CPU code sums  s @ W  (the other terms are exact zeros).  Each network's W stays in the
// L2 cache for all substeps and only the spiking rows (a few per cent) are read.  One generic
// body, compiled for each instruction set (the compiler vectorises over postsynaptic neurons,
// which changes no sum's order).
template <int PAIR, bool FMA, bool ZERO_RESET>
__attribute__((always_inline)) inline int32_t dense_body(const float* W, const float* iin, float* v, float* isyn,
                                                         float* r, Work& wk, const Consts& c) {
  const int64_t n = c.n;
  float* __restrict rec = wk.rec.data();
  int32_t* __restrict act = wk.act.data();
  uint8_t* __restrict spk8 = wk.spk8.data();
  const float* __restrict sign = wk.sign.data();
  const float a_syn = c.a_syn, r_h = c.r_h, a_m = c.a_m, c_m = c.c_m, v_reset = c.v_reset, v_th = c.v_th,
              a_out = c.a_out;
  int32_t count = 0;
  for (int64_t step = 0; step < c.substeps; ++step) {
    int64_t na = 0;
    for (int64_t w = 0; w < c.words; ++w)
      for (uint32_t x = wk.s[w]; x; x &= x - 1) act[na++] = static_cast<int32_t>(32 * w + __builtin_ctz(x));
    for (int64_t j = 0; j < n; ++j) rec[j] = 0.0f;
    for (int64_t k = 0; k < na; ++k) {
      const float* __restrict row = W + static_cast<int64_t>(act[k]) * n;
      if (act[k] < c.n_exc)
        for (int64_t j = 0; j < n; ++j) rec[j] = rec[j] + row[j];
      else
        for (int64_t j = 0; j < n; ++j) rec[j] = rec[j] - row[j];
    }
    for (int64_t j = 0; j < n; ++j) {
      float is;
      if (PAIR == 1) is = std::fma(a_syn, isyn[j], r_h * rec[j]);
      else if (PAIR == 2) is = std::fma(r_h, rec[j], a_syn * isyn[j]);
      else is = a_syn * isyn[j] + r_h * rec[j];
      float t = ZERO_RESET ? is + iin[j] : (v_reset + is) + iin[j];
      float vv = FMA ? std::fma(a_m, v[j], c_m * t) : a_m * v[j] + c_m * t;
      bool sp = vv > v_th;
      vv = sp ? v_reset : vv;
      float sv = sp ? sign[j] : 0.0f;
      float rr = FMA ? std::fma(a_out, r[j], sv) : a_out * r[j] + sv;
      v[j] = vv; isyn[j] = is; r[j] = rr;
      spk8[j] = sp;
    }
    for (int64_t w = 0; w < c.words; ++w) {
      uint32_t x = 0;
      const int64_t lo = 32 * w, hi = std::min<int64_t>(n, lo + 32);
      for (int64_t j = lo; j < hi; ++j) x |= static_cast<uint32_t>(spk8[j]) << (j - lo);
      wk.s[w] = x;
      count += popcount32(x);
    }
  }
  return count;
}

template <int PAIR, bool FMA, bool ZERO_RESET>
int32_t dense_scalar_t(const float* W, const float* iin, float* v, float* isyn, float* r, Work& wk, const Consts& c) {
  return dense_body<PAIR, FMA, ZERO_RESET>(W, iin, v, isyn, r, wk, c);
}
#if RSRP_X86
template <int PAIR, bool FMA, bool ZERO_RESET>
__attribute__((target("avx2,fma,popcnt,bmi"))) int32_t dense_avx2_t(const float* W, const float* iin, float* v,
                                                                      float* isyn, float* r, Work& wk, const Consts& c) {
  return dense_body<PAIR, FMA, ZERO_RESET>(W, iin, v, isyn, r, wk, c);
}
template <int PAIR, bool FMA, bool ZERO_RESET>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,popcnt,bmi"))) int32_t dense_avx512_t(
    const float* W, const float* iin, float* v, float* isyn, float* r, Work& wk, const Consts& c) {
  return dense_body<PAIR, FMA, ZERO_RESET>(W, iin, v, isyn, r, wk, c);
}
#endif

using DenseFn = int32_t (*)(const float*, const float*, float*, float*, float*, Work&, const Consts&);

template <int PAIR, bool FMA, bool ZR>
DenseFn pick_dense_isa(int64_t isa) {
#if RSRP_X86
  if (isa == 3) return dense_avx512_t<PAIR, FMA, ZR>;
  if (isa == 2) return dense_avx2_t<PAIR, FMA, ZR>;
#endif
  return dense_scalar_t<PAIR, FMA, ZR>;
}

template <int PAIR>
DenseFn pick_dense_pair(int64_t isa, bool fma, bool zr) {
  if (fma) return zr ? pick_dense_isa<PAIR, true, true>(isa) : pick_dense_isa<PAIR, true, false>(isa);
  return zr ? pick_dense_isa<PAIR, false, true>(isa) : pick_dense_isa<PAIR, false, false>(isa);
}

DenseFn pick_dense(int64_t isa, const Consts& c) {
  const bool zr = c.v_reset == 0.0f, fma = c.contract != 0;
  if (c.pair_syn == 1) return pick_dense_pair<1>(isa, fma, zr);
  if (c.pair_syn == 2) return pick_dense_pair<2>(isa, fma, zr);
  return pick_dense_pair<0>(isa, fma, zr);
}


int64_t supported_mask() {
  int64_t m = 1 << kScalar;
#if RSRP_X86
  __builtin_cpu_init();
  const bool fma = __builtin_cpu_supports("fma");
  if (fma) m |= 1 << kFma;
  if (fma && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt")) m |= 1 << kAvx2;
  if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vpopcntdq")) m |= 1 << kAvx512;
#endif
  return m;
}

int64_t best_isa() {
  int64_t m = supported_mask();
  if (m & (1 << kAvx512)) return kAvx512;
  if (m & (1 << kAvx2)) return kAvx2;
  return kScalar;
}

using RunFn = int32_t (*)(const uint32_t*, const float*, float*, float*, float*, Work&, const Consts&);

RunFn pick(int64_t isa) {
#if RSRP_X86
  if (isa == kAvx512) return run_avx512;
  if (isa == kAvx2) return run_avx2;
#endif
  return run_scalar;
}

// Offsets (in records) of one operand for every batch index, given its leading dims.
struct Broadcast {
  std::vector<int64_t> out_dims;
  std::vector<std::vector<int64_t>> strides;  // per operand, per batch dim (0: broadcast)
  int64_t offset(size_t op, int64_t b) const {
    int64_t off = 0;
    for (size_t d = out_dims.size(); d-- > 0;) {
      int64_t i = b % out_dims[d];
      b /= out_dims[d];
      off += i * strides[op][d];
    }
    return off;
  }
};

// Strides of an operand whose first `nb` dims are batch dims; error text if one does not fit.
std::string add_operand(Broadcast& bc, ffi::Span<const int64_t> dims, size_t nb, const char* name) {
  if (dims.size() < nb) return std::string(name) + ": too few dimensions";
  std::vector<int64_t> st(nb, 0);
  int64_t stride = 1;
  for (size_t d = nb; d-- > 0;) {
    if (dims[d] == bc.out_dims[d]) st[d] = stride;
    else if (dims[d] != 1) return std::string(name) + ": a batch dimension neither matches the result nor is 1";
    stride *= dims[d];
  }
  bc.strides.push_back(st);
  return "";
}

struct Job {
  const void* mask;  // packed words (uint32) or, for the real-weight kernel, W (float)
  int64_t mask_elems;  // elements per network
  const float *iin, *v0, *isyn0, *r0;
  const bool* spk0;
  float *v, *isyn, *r;
  bool* spk;
  int32_t* count;
  Broadcast bc;
  Consts c;
  RunFn run = nullptr;
  DenseFn dense = nullptr;
  int64_t networks;
};

void run_one(const Job& j, int64_t b, Work& wk) {
  const Consts& c = j.c;
  const int64_t n = c.n;
  const int64_t moff = j.bc.offset(0, b) * j.mask_elems;
  const float* iin = j.iin + j.bc.offset(1, b) * n;
  float* v = j.v + b * n;
  float* isyn = j.isyn + b * n;
  float* r = j.r + b * n;
  std::memcpy(v, j.v0 + j.bc.offset(2, b) * n, n * sizeof(float));
  std::memcpy(isyn, j.isyn0 + j.bc.offset(3, b) * n, n * sizeof(float));
  std::memcpy(r, j.r0 + j.bc.offset(4, b) * n, n * sizeof(float));
  pack_spikes(j.spk0 + j.bc.offset(5, b) * n, c, wk);
  if (j.dense) j.count[b] = j.dense(static_cast<const float*>(j.mask) + moff, iin, v, isyn, r, wk, c);
  else j.count[b] = j.run(static_cast<const uint32_t*>(j.mask) + moff, iin, v, isyn, r, wk, c);
  unpack_spikes(wk, c, j.spk + b * n);
}

struct Shared {
  Job job;
  int64_t block = 1, blocks = 0;
  std::atomic<int64_t> next{0}, done{0};
  std::mutex mu;
  std::condition_variable cv;
};

// Claim blocks until none is left (the caller and every pool task run this).
void drain(Shared& sh) {
  thread_local Work wk;
  thread_local Consts sized{};
  const Consts& c = sh.job.c;
  if (sized.n != c.n || sized.n_exc != c.n_exc || sized.k_r != c.k_r || wk.s.empty()) {
    wk.resize(c);
    sized = c;
  }
  for (;;) {
    int64_t k = sh.next.fetch_add(1);
    if (k >= sh.blocks) return;
    int64_t end = std::min(sh.job.networks, (k + 1) * sh.block);
    for (int64_t b = k * sh.block; b < end; ++b) run_one(sh.job, b, wk);
    if (sh.done.fetch_add(1) + 1 == sh.blocks) {
      std::lock_guard<std::mutex> lk(sh.mu);
      sh.cv.notify_all();
    }
  }
}

struct Outs {
  ffi::ResultBuffer<ffi::F32>& v;
  ffi::ResultBuffer<ffi::F32>& isyn;
  ffi::ResultBuffer<ffi::F32>& r;
  ffi::ResultBuffer<ffi::PRED>& spk;
  ffi::ResultBuffer<ffi::S32>& count;
};

// Shapes checked, the batch laid out, the networks run over the thread pool (both kernels).
ffi::Error Launch(ffi::ThreadPool& pool, bool dense, const void* mask, ffi::Span<const int64_t> md,
                  ffi::Buffer<ffi::F32>& iin, ffi::Buffer<ffi::F32>& v0, ffi::Buffer<ffi::F32>& isyn0,
                  ffi::Buffer<ffi::F32>& r0, ffi::Buffer<ffi::PRED>& spk0, Outs out, Consts c, int64_t isa,
                  int64_t threads) {
  auto vd = out.v->dimensions();
  if (vd.size() < 1) return ffi::Error::InvalidArgument("v must have a neuron axis");
  const size_t nb = vd.size() - 1;
  const int64_t n = vd[nb];
  if (dense) {
    if (md.size() != nb + 2 || md[nb] != n || md[nb + 1] != n)
      return ffi::Error::InvalidArgument("W must be (..., N, N) float32 [pre, post]");
  } else if (md.size() != nb + 2 || md[nb + 1] != n || md[nb] != (n + 31) / 32) {
    return ffi::Error::InvalidArgument("mask must be (..., ceil(N/32), N) uint32, word-major");
  }
  Broadcast bc;
  bc.out_dims.assign(vd.begin(), vd.begin() + nb);
  int64_t networks = 1;
  for (int64_t d : bc.out_dims) networks *= d;
  struct Op { ffi::Span<const int64_t> dims; const char* name; };
  const Op ops[] = {{md, "mask"}, {iin.dimensions(), "i_in"}, {v0.dimensions(), "v"},
                    {isyn0.dimensions(), "i_syn"}, {r0.dimensions(), "r"}, {spk0.dimensions(), "spk"}};
  for (const Op& op : ops) {
    size_t rank = op.dims.size();
    if (op.name != std::string("mask") && (rank != nb + 1 || op.dims[nb] != n))
      return ffi::Error::InvalidArgument(std::string(op.name) + " must be (..., N) like v");
    std::string err = add_operand(bc, op.dims, nb, op.name);
    if (!err.empty()) return ffi::Error::InvalidArgument(err);
  }
  if (isa == kBest) isa = best_isa();
  if (isa < kScalar || isa > kAvx512 || !(supported_mask() & (1 << isa)))
    return ffi::Error::InvalidArgument("the requested instruction set is not supported by this CPU");

  auto sh = std::make_shared<Shared>();
  Job& j = sh->job;
  c.n = n;
  c.words = (n + 31) / 32;
  j.mask = mask;
  j.mask_elems = dense ? n * n : c.words * n;
  j.iin = iin.typed_data();
  j.v0 = v0.typed_data();
  j.isyn0 = isyn0.typed_data();
  j.r0 = r0.typed_data();
  j.spk0 = spk0.typed_data();
  j.v = out.v->typed_data();
  j.isyn = out.isyn->typed_data();
  j.r = out.r->typed_data();
  j.spk = out.spk->typed_data();
  j.count = out.count->typed_data();
  j.bc = std::move(bc);
  j.c = c;
  if (dense) j.dense = pick_dense(isa, c);
  else j.run = pick(isa);
  j.networks = networks;
  if (networks == 0) return ffi::Error::Success();

  int64_t workers = threads > 0 ? threads : std::max<int64_t>(1, pool.num_threads());
  // blocks small enough to balance the load, large enough that claiming one costs nothing
  sh->block = std::max<int64_t>(1, std::min<int64_t>(16, networks / (4 * workers)));
  sh->blocks = (networks + sh->block - 1) / sh->block;
  int64_t tasks = std::min(workers, sh->blocks) - 1;
  for (int64_t t = 0; t < tasks; ++t) pool.Schedule([sh]() { drain(*sh); });
  drain(*sh);
  std::unique_lock<std::mutex> lk(sh->mu);
  sh->cv.wait(lk, [&] { return sh->done.load() == sh->blocks; });
  return ffi::Error::Success();
}

ffi::Error LifImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::U32> mask, ffi::Buffer<ffi::F32> iin,
                   ffi::Buffer<ffi::F32> v0, ffi::Buffer<ffi::F32> isyn0, ffi::Buffer<ffi::F32> r0,
                   ffi::Buffer<ffi::PRED> spk0, ffi::ResultBuffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> isyn,
                   ffi::ResultBuffer<ffi::F32> r, ffi::ResultBuffer<ffi::PRED> spk,
                   ffi::ResultBuffer<ffi::S32> count, int64_t substeps, int64_t n_exc, float a_syn, float r_h,
                   float a_m, float c_m, float v_reset, float v_th, float a_out, float k_r, int64_t contract,
                   int64_t isa, int64_t threads) {
  Consts c{substeps, 0, 0, n_exc, contract, a_syn, r_h, a_m, c_m, v_reset, v_th, a_out, k_r};
  return Launch(pool, false, mask.typed_data(), mask.dimensions(), iin, v0, isyn0, r0, spk0,
                Outs{v, isyn, r, spk, count}, c, isa, threads);
}

ffi::Error DenseImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> iin,
                     ffi::Buffer<ffi::F32> v0, ffi::Buffer<ffi::F32> isyn0, ffi::Buffer<ffi::F32> r0,
                     ffi::Buffer<ffi::PRED> spk0, ffi::ResultBuffer<ffi::F32> v, ffi::ResultBuffer<ffi::F32> isyn,
                     ffi::ResultBuffer<ffi::F32> r, ffi::ResultBuffer<ffi::PRED> spk,
                     ffi::ResultBuffer<ffi::S32> count, int64_t substeps, int64_t n_exc, float a_syn, float r_h,
                     float a_m, float c_m, float v_reset, float v_th, float a_out, float k_r, int64_t contract,
                     int64_t pair_syn, int64_t isa, int64_t threads) {
  Consts c{substeps, 0, 0, n_exc, contract, a_syn, r_h, a_m, c_m, v_reset, v_th, a_out, k_r, pair_syn};
  return Launch(pool, true, w.typed_data(), w.dimensions(), iin, v0, isyn0, r0, spk0,
                Outs{v, isyn, r, spk, count}, c, isa, threads);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RsrpLifSubsteps, LifImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::U32>>()    // mask (..., W, N), word-major
                                  .Arg<ffi::Buffer<ffi::F32>>()    // i_in (..., N)
                                  .Arg<ffi::Buffer<ffi::F32>>()    // v
                                  .Arg<ffi::Buffer<ffi::F32>>()    // i_syn
                                  .Arg<ffi::Buffer<ffi::F32>>()    // r
                                  .Arg<ffi::Buffer<ffi::PRED>>()   // spk
                                  .Ret<ffi::Buffer<ffi::F32>>()    // v
                                  .Ret<ffi::Buffer<ffi::F32>>()    // i_syn
                                  .Ret<ffi::Buffer<ffi::F32>>()    // r
                                  .Ret<ffi::Buffer<ffi::PRED>>()   // spk
                                  .Ret<ffi::Buffer<ffi::S32>>()    // spikes over the substeps
                                  .Attr<int64_t>("substeps")
                                  .Attr<int64_t>("n_exc")
                                  .Attr<float>("a_syn")
                                  .Attr<float>("r_h")
                                  .Attr<float>("a_m")
                                  .Attr<float>("c_m")
                                  .Attr<float>("v_reset")
                                  .Attr<float>("v_th")
                                  .Attr<float>("a_out")
                                  .Attr<float>("k_r")
                                  .Attr<int64_t>("contract")
                                  .Attr<int64_t>("isa")
                                  .Attr<int64_t>("threads"));

// Bit k set: code path k (1 scalar, 2 AVX2, 3 AVX-512) runs on this CPU; bit 8: the CPU has FMA.
extern "C" int64_t rsrp_lif_supported() { return supported_mask(); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(RsrpDenseLifSubsteps, DenseImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()    // W (..., N, N) [pre, post]
                                  .Arg<ffi::Buffer<ffi::F32>>()    // i_in (..., N)
                                  .Arg<ffi::Buffer<ffi::F32>>()    // v
                                  .Arg<ffi::Buffer<ffi::F32>>()    // i_syn
                                  .Arg<ffi::Buffer<ffi::F32>>()    // r
                                  .Arg<ffi::Buffer<ffi::PRED>>()   // spk
                                  .Ret<ffi::Buffer<ffi::F32>>()    // v
                                  .Ret<ffi::Buffer<ffi::F32>>()    // i_syn
                                  .Ret<ffi::Buffer<ffi::F32>>()    // r
                                  .Ret<ffi::Buffer<ffi::PRED>>()   // spk
                                  .Ret<ffi::Buffer<ffi::S32>>()    // spikes over the substeps
                                  .Attr<int64_t>("substeps")
                                  .Attr<int64_t>("n_exc")
                                  .Attr<float>("a_syn")
                                  .Attr<float>("r_h")
                                  .Attr<float>("a_m")
                                  .Attr<float>("c_m")
                                  .Attr<float>("v_reset")
                                  .Attr<float>("v_th")
                                  .Attr<float>("a_out")
                                  .Attr<float>("k_r")
                                  .Attr<int64_t>("contract")
                                  .Attr<int64_t>("pair_syn")
                                  .Attr<int64_t>("isa")
                                  .Attr<int64_t>("threads"));
