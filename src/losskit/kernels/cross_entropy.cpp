// losskit's CPU cross-entropy kernel: loss and gradient of class-index cross entropy, one row at a time.
//
// Built on first use by losskit/engine/native.py (-O3 for the x86-64 level the CPU runs: x86-64-v4 = AVX-512,
// x86-64-v3 = AVX2 + FMA, or baseline; -march=native elsewhere), plain C ABI, loaded with ctypes, which
// releases the GIL for the call; rows are split over std::threads inside the call. Without a compiler losskit
// uses its torch-op path, which computes the same formulas. `make sanitize` runs the kernel's tests on an
// AddressSanitizer + UBSan build. Every buffer may have any alignment: loads and stores go through memcpy.
//
// Per row x (C logits, float or bfloat16 storage, fp32 arithmetic, per-row scalars in double), target y
// (-1: ignored), class weights w (ones when absent, W = Σ_c w_c), smoothing ε, z-loss coefficient z:
//
//   m = max_c x_c,  S = Σ_c exp(x_c - m),  L = log S,  lse = m + L
//   loss = (1-ε)·w_y·(L - (x_y - m)) + ε/C·(L·W - Σ_c w_c·(x_c - m)) + z·lse²
//   grad = s_n·[ p·((1-ε)·w_y + ε/C·W + 2·z·lse) - (1-ε)·w_y·onehot(y) - ε/C·w ],   p = exp(x - m) / S
//
// where s_n is the reduction's scale times the row's own scale (backward of reduction='none'). Rows stay in
// the L2 cache between the three passes over them (max; sum of exponentials; gradient), so the logits are
// read from memory once and the gradient written once. Ignored rows get loss 0 and a zero gradient row.
// Shifting by the row maximum keeps every exponent ≤ 0 and every sum free of cancellation.

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "calls.h"
#include "pages.h"
#include "pool.h"
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace {

// One vector register's width for the instruction set this build targets (the library is built per x86-64 level,
// chosen at run time by losskit/engine/native.py): 64 bytes with AVX-512, 32 with AVX/AVX2, else 16. Wider GCC
// vectors than the registers would be split into pieces, and some operations (compares, selects, conversions)
// then fall back to scalar code.
#if defined(__AVX512F__)
#define LOSSKIT_VBYTES 64
#elif defined(__AVX__)
#define LOSSKIT_VBYTES 32
#else
#define LOSSKIT_VBYTES 16
#endif
typedef float vf __attribute__((vector_size(LOSSKIT_VBYTES)));
typedef int32_t vi __attribute__((vector_size(LOSSKIT_VBYTES)));
typedef uint32_t vu __attribute__((vector_size(LOSSKIT_VBYTES)));
typedef uint16_t vh __attribute__((vector_size(LOSSKIT_VBYTES / 2)));
constexpr int V = LOSSKIT_VBYTES / 4;
constexpr int64_t CHUNK_ELEMENTS = int64_t(1) << 14;  // a chunk of rows handed to one thread of the pool

inline vf splat(float a) { return vf{} + a; }

// lane l holds l
inline vi lane_index() {
    vi v = {};
    for (int l = 0; l < V; ++l) v[l] = l;
    return v;
}

// `n` (0 < n < V) values from `p` in the first lanes and `fill` in the others, read without touching memory past
// p + n: a masked load where the ISA has one (a vector load right after scalar stores of the same bytes would
// stall on store forwarding), else through a buffer.
template <class IO>
inline vf load_part(const typename IO::T* p, int64_t n, float fill) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    const __mmask16 m = __mmask16((1u << n) - 1u);
    if constexpr (std::is_same_v<typename IO::T, float>) {
        return vf(_mm512_mask_loadu_ps(_mm512_set1_ps(fill), m, p));
    } else {
        const __m256i h = _mm256_maskz_loadu_epi16(m, p);
        const __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        return vf(_mm512_mask_blend_ps(m, _mm512_set1_ps(fill), v));
    }
#else
#if defined(__AVX2__) && LOSSKIT_VBYTES == 32
    if constexpr (std::is_same_v<typename IO::T, float>) {
        const vi m = lane_index() < int(n);
        return vf(_mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, __m256i(m)), __m256(vf(m))));
    }
#endif
    alignas(64) typename IO::T buf[V];
    std::memset(buf, 0, sizeof buf);
    std::memcpy(buf, p, size_t(n) * sizeof(typename IO::T));  // p may be misaligned (see ld below)
    const vf v = IO::load(buf);
    return lane_index() < int(n) ? v : splat(fill);
#endif
}

// Scalar reads and writes through memcpy: the caller's buffers may have any alignment (a tensor made by
// torch.frombuffer at an odd offset, say), and a plain `*p` on a misaligned pointer is undefined behaviour.
template <class U>
inline U ld(const U* p) {
    U v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class U>
inline void st(U* p, U v) {
    std::memcpy(p, &v, sizeof v);
}

// exp(x) for x ≤ 0 or NaN, the only arguments it gets (x - max of the row): x = n·ln2 + r, |r| ≤ ln2/2 (n·ln2 in
// two parts, so r is exact to about 2^-32), exp(r) by a degree-6 polynomial (1, 1 and a minimax fit of the other
// five coefficients to the relative error: at most 6.2e-8, about 1 ulp), times 2^n. One vector instruction per
// step where the ISA has it (AVX-512: vrndscaleps, vscalefps, which also gives the subnormal range; AVX2:
// vroundps, vmaxps), generic vector code otherwise. Results below the smallest normal float (x < -87.34) are 0 on
// the AVX2 and generic paths and the true subnormal with AVX-512: no loss or gradient can tell them apart. NaN
// propagates (vmaxps returns its second operand when either is NaN).
constexpr float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;
constexpr float P6 = 1.3814611593261361e-3f, P5 = 8.368710055947304e-3f, P4 = 4.166838899254799e-2f,
                P3 = 1.666652113199234e-1f, P2 = 4.999999403953552e-1f;

template <class Vec, class Fma>
inline Vec poly6(Vec r, Fma fma) {
    Vec p = fma(r, P6, P5);
    p = fma(r, p, P4);
    p = fma(r, p, P3);
    p = fma(r, p, P2);
    p = fma(r, p, 1.0f);
    return fma(r, p, 1.0f);
}

#if defined(__AVX512F__)
inline vf vexp(vf x) {
    const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);  // exp(-104) rounds to 0; NaN stays NaN
    const __m512 fn = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(LN2_HI), xc);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(LN2_LO), r);
    const __m512 p = poly6(r, [](__m512 a, auto b, float c) {
        __m512 bv;
        if constexpr (std::is_same_v<decltype(b), float>)
            bv = _mm512_set1_ps(b);
        else
            bv = b;
        return _mm512_fmadd_ps(a, bv, _mm512_set1_ps(c));
    });
    return _mm512_scalef_ps(p, fn);
}
#elif defined(__AVX2__) && defined(__FMA__) && LOSSKIT_VBYTES == 32
inline vf vexp(vf x) {
    const __m256 lo = _mm256_set1_ps(-87.3365479f);
    const __m256 xc = _mm256_max_ps(lo, x);  // NaN stays NaN
    const __m256 fn = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(LN2_HI), xc);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(LN2_LO), r);
    const __m256 p = poly6(r, [](__m256 a, auto b, float c) {
        __m256 bv;
        if constexpr (std::is_same_v<decltype(b), float>)
            bv = _mm256_set1_ps(b);
        else
            bv = b;
        return _mm256_fmadd_ps(a, bv, _mm256_set1_ps(c));
    });
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fn), _mm256_set1_epi32(127)), 23);
    const __m256 out = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), out);  // 0 below the normal range
}
#else
inline vf vexp(vf x) {
    const vf lo = splat(-87.3365479f);
    const vf xc = x < lo ? lo : x;  // NaN stays NaN
    const vf t = xc * LOG2E;
    const vf fn = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
    vf r = xc - fn * LN2_HI;
    r = r - fn * LN2_LO;
    const vf p = poly6(r, [](vf a, auto b, float c) { return a * b + c; });
    const vi bits = (__builtin_convertvector(fn, vi) + 127) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const vf out = p * scale;
    return x < lo ? splat(0.0f) : out;
}
#endif

inline float sexp(float x) { return std::exp(x); }

inline vf vmax(vf a, vf b) { return a > b ? a : b; }

inline float hmax(vf a) {
    float m = a[0];
    for (int i = 1; i < V; ++i) m = a[i] > m ? a[i] : m;
    return m;
}

inline double hsum(vf a) {
    double s = 0.0;
    for (int i = 0; i < V; ++i) s += a[i];
    return s;
}

// storage types: float, and bfloat16 kept as its 16 bits (fp32 arithmetic, round-to-nearest-even on store)
struct F32 {
    typedef float T;
    static inline vf load(const T* p) {
        vf v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static inline void store(T* p, vf v) { std::memcpy(p, &v, sizeof v); }
    // a non-temporal store (p aligned to the vector's size), where the ISA has one
    static inline void stream(T* p, vf v) {
#if defined(__AVX512F__)
        _mm512_stream_ps(p, __m512(v));
#elif defined(__AVX__) && LOSSKIT_VBYTES == 32
        _mm256_stream_ps(p, __m256(v));
#else
        store(p, v);
#endif
    }
    static inline float get(const T* p) { return ld(p); }
    static inline void put(T* p, float v) { st(p, v); }
};

struct BF16 {
    typedef uint16_t T;
    static inline vf load(const T* p) {
#if defined(__AVX512F__)
        return vf(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16)));
#elif defined(__AVX2__) && LOSSKIT_VBYTES == 32
        return vf(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16)));
#else
        vh h;
        std::memcpy(&h, p, sizeof h);
        const vu u = __builtin_convertvector(h, vu) << 16;
        vf v;
        std::memcpy(&v, &u, sizeof v);
        return v;
#endif
    }
    // round to nearest even; a NaN stays NaN (quieted, sign and top payload bits kept)
#if defined(__AVX512F__)
    typedef __m256i packed;
    static inline packed pack(vf v) {
        const vu u = vu(__m512i(v));
        const vu rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
        const vu quiet = (u >> 16) | 0x40u;
        const __mmask16 nan = _mm512_cmp_ps_mask(__m512(v), __m512(v), _CMP_UNORD_Q);
        return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, __m512i(rounded), __m512i(quiet)));
    }
    static inline void stream(T* p, vf v) { _mm256_stream_si256((__m256i*)p, pack(v)); }
#elif defined(__AVX2__) && LOSSKIT_VBYTES == 32
    typedef __m128i packed;
    static inline packed pack(vf v) {
        const vu u = vu(__m256i(v));
        const vu rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
        const vu quiet = (u >> 16) | 0x40u;
        const __m256 nan = _mm256_cmp_ps(__m256(v), __m256(v), _CMP_UNORD_Q);
        const __m256i bits = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(__m256i(rounded)),
                                                                  _mm256_castsi256_ps(__m256i(quiet)), nan));
        return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(bits, bits), 0x08));
    }
    static inline void stream(T* p, vf v) { _mm_stream_si128((__m128i*)p, pack(v)); }
#else
    typedef vh packed;
    static inline packed pack(vf v) {
        vu u;
        std::memcpy(&u, &v, sizeof u);
        const vu rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
        const vu quiet = (u >> 16) | 0x40u;
        const vu bits = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
        return __builtin_convertvector(bits, vh);
    }
    static inline void stream(T* p, vf v) { store(p, v); }
#endif
    static inline void store(T* p, vf v) {
        const packed h = pack(v);
        std::memcpy(p, &h, sizeof h);
    }

    static inline float get(const T* p) {
        const uint32_t u = uint32_t(ld(p)) << 16;
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }
    static inline void put(T* p, float v) {
        uint32_t u;
        std::memcpy(&u, &v, sizeof u);
        const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
        st(p, uint16_t(nan ? (u >> 16) | 0x40u : (u + 0x7fffu + ((u >> 16) & 1u)) >> 16));
    }
};

// One vector of gradient values: exp(x - m_b)·factor - k·w (the smoothing term, when smoothing). Every class goes
// through this one expression, whole vectors and the few classes at a row's ends alike (through a padded vector),
// so a class's result does not depend on where its row lies in memory.
// The smoothing term is subtracted in one fused step, spelled out: left to the compiler, whether a multiply and a
// subtraction are fused could differ between two copies of this code.
inline vf grad_vals(vf e, vf fac, bool smooth, vf kw) {
    if (!smooth) return e * fac;
#if defined(__AVX512F__)
    return vf(_mm512_fmsub_ps(__m512(e), __m512(fac), __m512(kw)));
#elif defined(__FMA__) && LOSSKIT_VBYTES == 32
    return vf(_mm256_fmsub_ps(__m256(e), __m256(fac), __m256(kw)));
#elif defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
    vf out;
    for (int i = 0; i < V; ++i) out[i] = std::fma(e[i], fac[i], -kw[i]);
    return out;
#else
    return e * fac - kw;  // no fused multiply-add on this ISA: nothing to fuse
#endif
}

// bf16 gradient stores with AVX-512 BF16 (vcvtneps2bf16: round to nearest even, NaN quieted as above, in one
// instruction), chosen at run time where the CPU has it; the build's level (x86-64-v4) does not include it, so
// only this function is compiled for it. The instruction flushes subnormal inputs to zero, so a vector holding
// one is rounded by BF16::pack instead: the bits are the same either way.
#if defined(__AVX512F__) && ((defined(__clang__) && __clang_major__ >= 11) || (!defined(__clang__) && __GNUC__ >= 10))
#define LOSSKIT_HAVE_NE 1
__attribute__((target("avx512bf16"))) void bf16_grad_vectors(uint16_t* g, const float* e, int64_t n, float fac,
                                                            const float* w, float k, bool smooth, bool stream) {
    const vf vfac = splat(fac), vk = splat(k);
    for (int64_t i = 0; i + V <= n; i += V) {
        const __m512 out = __m512(grad_vals(F32::load(e + i), vfac, smooth, w ? vk * F32::load(w + i) : vk));
        __m256i h;
        if (__builtin_expect(_mm512_fpclass_ps_mask(out, 0x20) != 0, 0)) {  // a subnormal
            h = BF16::pack(vf(out));
        } else {
            const __m256bh b = _mm512_cvtneps_pbh(out);
            std::memcpy(&h, &b, sizeof h);
        }
        if (stream)
            _mm256_stream_si256(reinterpret_cast<__m256i*>(g + i), h);
        else
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(g + i), h);
    }
}
#else
#define LOSSKIT_HAVE_NE 0
#endif
// 1 when the bf16 stores use vcvtneps2bf16 (the CPU has AVX-512 BF16; losskit_ce_bf16_ne(0) turns it off)
std::atomic<int> use_ne{-1};
inline bool bf16_ne() {
    int u = use_ne.load(std::memory_order_relaxed);
    if (u < 0) {
#if LOSSKIT_HAVE_NE
        __builtin_cpu_init();
        u = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
#else
        u = 0;
#endif
        use_ne.store(u, std::memory_order_relaxed);
    }
    return u == 1;
}

struct Options {
    const int64_t* y;         // target per row, -1 when ignored
    const float* w;           // class weights, or null for ones
    double w_sum;             // Σ_c w_c (C when w is null)
    double eps, z;            // label smoothing, z-loss coefficient
    double scale;             // the reduction's scale (1 for 'sum' and 'none')
    const float* row_scale;   // per-row factor, or null
    float* rows;              // out: per-row loss
};

// A row is done in blocks of B classes, each read from memory once and then kept in L1 while it is used: its
// maximum, then its exponentials, kept in an fp32 scratch row (L2) for the gradient. The row's maximum is found
// as the row goes (an "online" maximum): block b's exponentials are taken against m_b, the largest logit of
// blocks 0..b, and when a block raises it the sums so far are rescaled by exp(m_old - m_new). The gradient pass
// multiplies block b's stored exp(x - m_b) by exp(m_b - m)·coef/S, m the row's maximum, and writes the gradient
// row once; every exponent stays ≤ 0. So memory sees one read of the logits and one write of the gradient: a
// large gradient is written with non-temporal stores, which do not read its lines first (a plain copy into an
// existing buffer reads them); its row then starts with the few classes before the first aligned vector.
constexpr int64_t B = 1024;
static_assert(B % (4 * V) == 0, "a block is whole groups of four vectors");
// cache lines per two vectors of logits (at least one prefetch per loop turn)
template <class T>
constexpr int64_t PF_LINES = 2 * V * int64_t(sizeof(T)) / 64 > 1 ? 2 * V * int64_t(sizeof(T)) / 64 : 1;
#if defined(__AVX__)
constexpr bool CAN_STREAM = true;
#else
constexpr bool CAN_STREAM = false;
#endif
// gradients of at least this many bytes are written with non-temporal stores (losskit_ce_stream_bytes sets it)
std::atomic<double> stream_bytes{double(8 << 20)};
// rows of at most this many classes (and at most 2V) go through tiny_rows (losskit_ce_tiny_classes sets it; tests
// set 0 to compare both loops bit for bit)
std::atomic<int64_t> tiny_classes{int64_t(1) << 62};

// the largest of x[i0, i1) (a NaN may or may not win, as in the old whole-row pass: it poisons the sum anyway)
template <class IO>
inline float block_max(const typename IO::T* xr, int64_t i0, int64_t i1) {
    vf m0 = splat(-std::numeric_limits<float>::infinity()), m1 = m0, m2 = m0, m3 = m0;
    int64_t i = i0;
    for (; i + 4 * V <= i1; i += 4 * V) {
        m0 = vmax(m0, IO::load(xr + i));
        m1 = vmax(m1, IO::load(xr + i + V));
        m2 = vmax(m2, IO::load(xr + i + 2 * V));
        m3 = vmax(m3, IO::load(xr + i + 3 * V));
    }
    for (; i + V <= i1; i += V) m0 = vmax(m0, IO::load(xr + i));
    float m = hmax(vmax(vmax(m0, m1), vmax(m2, m3)));
    for (; i < i1; ++i) {
        const float v = IO::get(xr + i);
        m = v > m ? v : m;
    }
    return m;
}

// Rows of at most 2V classes (a classifier's 10 or 16): each row in one vector (NV = 1, c <= V) or two (NV = 2,
// the second padded), with no scratch row and no block bookkeeping. The arithmetic is that of rows_kernel's loop
// on such a row (one block; its whole vector, then the last c % V classes in one padded vector), operation for
// operation, so that both give the same bits; only the loop structure is shorter, which lets the CPU overlap
// consecutive rows (a row is a chain of dependent steps: max, exp, sum, log, division).
template <class IO, int NV>
int64_t tiny_rows(const typename IO::T* x, int64_t ldx, typename IO::T* g, int64_t ldg, int64_t r0, int64_t r1,
                  int64_t c, const Options& o) {
    typedef typename IO::T T;
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    const bool smooth = o.eps > 0.0;
    const int64_t part = c - (NV - 1) * V;  // classes in the last vector, 1..V
    const bool whole = part == V;
    const double eps_c = o.eps / double(c);
    const int cn = int(c), pn = int(part);
    const vi live = lane_index() < pn;
    const float* wl = o.w ? o.w + (NV - 1) * V : nullptr;  // the last vector's weights
    const vf wv = wl ? (whole ? F32::load(wl) : load_part<F32>(wl, part, 0.0f)) : splat(0.0f);
    const vf wv0 = NV == 2 && o.w ? F32::load(o.w) : splat(0.0f);
    for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * ldx;
        T* gr = g ? g + r * ldg : nullptr;
        const int64_t y = ld(o.y + r);
        if (y < 0) {
            st(o.rows + r, 0.0f);
            if (gr) std::memset(static_cast<void*>(gr), 0, sizeof(T) * c);
            continue;
        }
        if (y >= c) return r + 1;
        const T* xl = xr + (NV - 1) * V;  // the last vector's classes
        const vf x0 = NV == 2 ? IO::load(xr) : splat(0.0f);
        const vf xv = whole ? IO::load(xl) : load_part<IO>(xl, part, 0.0f);
        float m = ninf;  // NaNs are passed over, as block_max does
        if (NV == 2)
            for (int l = 0; l < V; ++l) m = x0[l] > m ? x0[l] : m;
        for (int l = 0; l < pn; ++l) m = xv[l] > m ? xv[l] : m;
        const float mb = m > ninf ? m : 0.0f;
        const vf a0 = x0 - splat(mb);
        const vf ea0 = NV == 2 ? vexp(a0) : splat(0.0f);
        const vf a = whole ? xv - splat(mb) : (live ? xv - splat(mb) : splat(0.0f));
        const vf ea = whole ? vexp(a) : (live ? vexp(a) : splat(0.0f));
        double S = 0.0, dot = 0.0;
        if (NV == 2) {
            S = hsum(ea0 + ea);  // rows_kernel: both vectors into one accumulator, then its lanes
        } else {
            for (int l = 0; l < cn; ++l) S += ea[l];  // the lanes past c hold 0
        }
        if (smooth) {
            if (NV == 2 && whole) {  // rows_kernel: two vector accumulators, added lane by lane, then summed
                vf d0 = splat(0.0f), d1 = d0;  // its very steps (a product folded into its sum is rounded once)
                d0 += o.w ? a0 * wv0 : a0;
                d1 += o.w ? a * wv : a;
                dot = hsum(d0 + d1);
            } else if (NV == 2) {  // rows_kernel: the whole vector into the vector sum, the rest class by class
                for (int l = 0; l < pn; ++l) dot += o.w ? double(a[l]) * ld(wl + l) : double(a[l]);
                dot = hsum(o.w ? a0 * wv0 : a0) + dot;
            } else if (whole) {
                dot = hsum(o.w ? a * wv : a);
            } else {
                for (int l = 0; l < cn; ++l) dot += o.w ? double(a[l]) * ld(o.w + l) : double(a[l]);
            }
        }
        const double L = std::log(S), lse = double(m) + L;
        const double w_y = o.w ? double(ld(o.w + y)) : 1.0;
        const float x_y = IO::get(xr + y);
        double loss = (1.0 - o.eps) * w_y * (L - (double(x_y) - double(m)));
        if (smooth) loss += eps_c * (L * o.w_sum - dot);
        if (o.z > 0.0) loss += o.z * lse * lse;
        st(o.rows + r, float(loss));
        if (!gr) continue;
        const double s_n = o.row_scale ? o.scale * double(ld(o.row_scale + r)) : o.scale;
        const double coef = ((1.0 - o.eps) * w_y + eps_c * o.w_sum + 2.0 * o.z * lse) * s_n;
        const float k = float(eps_c * s_n);
        const float hit = float(-(1.0 - o.eps) * w_y * s_n);
        const float f = float(coef / S);
        const vf vk = splat(k);
        if (NV == 2) IO::store(gr, grad_vals(ea0, splat(f), smooth, o.w ? vk * wv0 : vk));
        const vf out = grad_vals(ea, splat(f), smooth, o.w ? vk * wv : vk);
        T* gl = gr + (NV - 1) * V;
        if (whole) {
            IO::store(gl, out);
        } else {
            for (int l = 0; l < pn; ++l) IO::put(gl + l, out[l]);
        }
        float g_y = (y < (NV - 1) * V ? ea0[y] : ea[y - (NV - 1) * V]) * f + hit;
        if (smooth) g_y -= o.w ? k * ld(o.w + y) : k;
        IO::put(gr + y, g_y);
    }
    return 0;
}

// Rows [r0, r1) of x (row stride ldx) -> o.rows and, when g is not null, the gradient (row stride ldg; g may be
// x itself). `stream`: write the gradient with non-temporal stores. Returns 0, or 1 + the index of a row whose
// target is outside [0, C) (nothing written for it).
template <class IO>
int64_t rows_kernel(const typename IO::T* x, int64_t ldx, typename IO::T* g, int64_t ldg, int64_t r0, int64_t r1,
                    int64_t c, const Options& o, bool stream) {
    typedef typename IO::T T;
    if (c <= tiny_classes.load(std::memory_order_relaxed)) {
        if (c > 0 && c <= V) return tiny_rows<IO, 1>(x, ldx, g, ldg, r0, r1, c, o);
        if (c > V && c <= 2 * V) return tiny_rows<IO, 2>(x, ldx, g, ldg, r0, r1, c, o);
    }
    constexpr uintptr_t VB = sizeof(T) * V;
    const bool smooth = o.eps > 0.0;
    stream = stream && CAN_STREAM && g != nullptr && static_cast<const void*>(g) != static_cast<const void*>(x) &&
             reinterpret_cast<uintptr_t>(g) % sizeof(T) == 0;
    const bool ne = std::is_same_v<IO, BF16> && bf16_ne();
    // exp(x - m_b) of the row; one vector longer, so that the row's last c % V classes go through a whole one
    std::vector<float> scratch(g ? static_cast<size_t>(c + V) : 0);
    const int64_t nb = (c + B - 1) / B;
    std::vector<float> block_m(static_cast<size_t>(nb));  // m_b per block
    float* e_row = scratch.data();
    const double eps_c = o.eps / double(c);
    for (int64_t r = r0; r < r1; ++r) {
        const T* xr = x + r * ldx;
        T* gr = g ? g + r * ldg : nullptr;
        const int64_t y = ld(o.y + r);
        if (y < 0) {
            st(o.rows + r, 0.0f);
            if (gr) std::memset(static_cast<void*>(gr), 0, sizeof(T) * c);
            continue;
        }
        if (y >= c) return r + 1;
        const float x_y = IO::get(xr + y);
        // one pass: per block its maximum, then Σ exp(x - m_b) (and Σ w·(x - m_b) when smoothing)
        float m = -std::numeric_limits<float>::infinity();
        vf s0 = splat(0.0f), s1 = s0, d0 = s0, d1 = s0, w0 = s0, w1 = s0;
        // the scalar classes' sum; Σ w·(x - m) and Σ w of the classes flushed from the vector lanes so far
        double dot = 0.0, w_seen = 0.0;
        for (int64_t b = 0; b < nb; ++b) {
            const int64_t i0 = b * B, i1 = i0 + B < c ? i0 + B : c;
            const float bm = block_max<IO>(xr, i0, i1);
            if (bm > m) {  // the maximum rises (never to NaN): rescale what was summed against the old one
                const float f = sexp(m - bm);  // 0 for the first block (m = -inf)
                s0 *= f;
                s1 *= f;
                if (smooth && b > 0) {
                    dot += hsum(d0 + d1);
                    w_seen += o.w ? hsum(w0 + w1) : 0.0;
                    d0 = d1 = w0 = w1 = splat(0.0f);
                    dot += (double(m) - double(bm)) * (o.w ? w_seen : double(i0));
                }
                m = bm;
            }
            // while no class so far is above -inf, a block's exponentials are taken against 0: they are 0 (or NaN,
            // which poisons the row as it should) and stay so whatever the maximum becomes
            const bool none = !(m > -std::numeric_limits<float>::infinity());
            const float mb = none ? 0.0f : m;
            block_m[size_t(b)] = none ? -std::numeric_limits<float>::infinity() : m;
            const vf vm = splat(mb);
            int64_t i = i0;
            for (; i + 2 * V <= i1; i += 2 * V) {
                // the next block, while this one is in L1 (the hardware prefetcher stops at each 4 KiB page)
                for (int64_t l = 0; l < PF_LINES<T>; ++l)
                    __builtin_prefetch(reinterpret_cast<const char*>(xr + i + B) + 64 * l, 0, 3);
                const vf a = IO::load(xr + i) - vm, a1 = IO::load(xr + i + V) - vm;
                const vf ea = vexp(a), ea1 = vexp(a1);
                s0 += ea;
                s1 += ea1;
                if (gr) {
                    F32::store(e_row + i, ea);
                    F32::store(e_row + i + V, ea1);
                }
                if (smooth) {
                    if (o.w) {
                        const vf wa = F32::load(o.w + i), wa1 = F32::load(o.w + i + V);
                        d0 += a * wa;
                        d1 += a1 * wa1;
                        w0 += wa;
                        w1 += wa1;
                    } else {
                        d0 += a;
                        d1 += a1;
                    }
                }
            }
            for (; i + V <= i1; i += V) {
                const vf a = IO::load(xr + i) - vm;
                const vf ea = vexp(a);
                s0 += ea;
                if (gr) F32::store(e_row + i, ea);
                if (smooth) {
                    if (o.w) {
                        const vf wa = F32::load(o.w + i);
                        d0 += a * wa;
                        w0 += wa;
                    } else {
                        d0 += a;
                    }
                }
            }
            if (i < i1) {  // the row's last c % V classes (only the last block has them): one vector, padded
                // with the maximum and its lanes then zeroed (a class count below V costs one vector, not c scalar
                // exps; padding with -inf instead would make exp underflow, which costs a microcode assist a lane)
                const vf ea0 = vexp(load_part<IO>(xr + i, i1 - i, mb) - vm);
                const vf ea = lane_index() < int(i1 - i) ? ea0 : splat(0.0f);
                s0 += ea;
                if (gr) F32::store(e_row + i, ea);
                if (smooth)
                    for (; i < i1; ++i) {
                        const double a = double(IO::get(xr + i) - mb);
                        dot += o.w ? a * ld(o.w + i) : a;
                    }
            }
        }
        const double S = hsum(s0 + s1);
        const double L = std::log(S), lse = double(m) + L;
        const double w_y = o.w ? double(ld(o.w + y)) : 1.0;
        double loss = (1.0 - o.eps) * w_y * (L - (double(x_y) - double(m)));
        if (smooth) loss += eps_c * (L * o.w_sum - (hsum(d0 + d1) + dot));
        if (o.z > 0.0) loss += o.z * lse * lse;
        st(o.rows + r, float(loss));
        if (!gr) continue;
        // the gradient (the target's entry is set after it, from fp32 values)
        const double s_n = o.row_scale ? o.scale * double(ld(o.row_scale + r)) : o.scale;
        const double coef = ((1.0 - o.eps) * w_y + eps_c * o.w_sum + 2.0 * o.z * lse) * s_n;
        const float k = float(eps_c * s_n);
        const float hit = float(-(1.0 - o.eps) * w_y * s_n);
        // p·coef = exp(x - m_b)·exp(m_b - m)·(coef / S); the factor is found once per distinct m_b
        const float f = float(coef / S);
        float last_m = m, last_f = f;
        auto factor = [&](int64_t b) {
            const float mb = block_m[size_t(b)];
            if (mb != last_m) {
                last_m = mb;
                last_f = float(double(f) * std::exp(double(mb) - double(m)));
            }
            return last_f;
        };
        const vf vk = splat(k);
        // classes [j0, j0 + V) through one vector, each lane with its own block's factor; lanes past `j1` unused
        auto lanes = [&](int64_t j0, int64_t j1, float* out) {
            alignas(64) float e[V] = {}, fa[V] = {}, w[V] = {};
            for (int64_t j = j0; j < j1; ++j) {
                e[j - j0] = e_row[j];
                fa[j - j0] = factor(j / B);
                w[j - j0] = o.w ? ld(o.w + j) : 0.0f;
            }
            F32::store(out, grad_vals(F32::load(e), F32::load(fa), smooth, o.w ? vk * F32::load(w) : vk));
        };
        auto few = [&](int64_t j0, int64_t j1) {  // fewer than V classes
            if (j1 <= j0) return;
            alignas(64) float out[V];
            if (j0 / B == (j1 - 1) / B) {  // one block's factor (e_row holds a whole vector from j0, see scratch)
                const vf kw = o.w ? vk * load_part<F32>(o.w + j0, j1 - j0, 0.0f) : vk;
                F32::store(out, grad_vals(F32::load(e_row + j0), splat(factor(j0 / B)), smooth, kw));
            } else {
                lanes(j0, j1, out);
            }
            for (int64_t j = j0; j < j1; ++j) IO::put(gr + j, out[j - j0]);
        };
        // the first classes up to an aligned vector (with non-temporal stores), then whole vectors in runs of one
        // factor, a vector across a block boundary lane by lane, and the last c % V classes
        int64_t i = stream ? int64_t((VB - reinterpret_cast<uintptr_t>(gr) % VB) % VB / sizeof(T)) : 0;
        i = i < c ? i : c;
        few(0, i);
        while (i + V <= c) {
            const int64_t b = i / B, bend = (b + 1) * B < c ? (b + 1) * B : c;
            const float fb = factor(b);
            const int64_t nv = (bend - i) / V * V;  // whole vectors inside block b
            int64_t j = i;
#if LOSSKIT_HAVE_NE
            if (std::is_same_v<IO, BF16> && ne) {
                bf16_grad_vectors(reinterpret_cast<uint16_t*>(gr) + i, e_row + i, nv, fb, o.w ? o.w + i : nullptr, k,
                                  smooth, stream);
                j = i + nv;
            }
#endif
            const vf vfac = splat(fb);
            for (; j < i + nv; j += V) {
                const vf out = grad_vals(F32::load(e_row + j), vfac, smooth, o.w ? vk * F32::load(o.w + j) : vk);
                if (stream)
                    IO::stream(gr + j, out);
                else
                    IO::store(gr + j, out);
            }
            i = j;
            if (i < bend && i + V <= c) {  // one vector across the boundary at bend
                alignas(64) float out[V];
                lanes(i, i + V, out);
                if (stream)
                    IO::stream(gr + i, F32::load(out));
                else
                    IO::store(gr + i, F32::load(out));
                i += V;
            }
        }
        few(i, c);
        float g_y = e_row[y] * factor(y / B) + hit;
        if (smooth) g_y -= o.w ? k * ld(o.w + y) : k;
        IO::put(gr + y, g_y);
    }
#if defined(__AVX__)
    if (stream) _mm_sfence();  // the non-temporal stores are visible before the caller (another thread) reads
#endif
    return 0;
}

}  // namespace

extern "C" {

int losskit_kernel_version() { return 6; }

// Whether bf16 gradients are rounded with AVX-512 BF16's vcvtneps2bf16 (1) or with integer operations (0), the
// same bits either way; `set` 0 or 1 chooses (1 only where the CPU has it), -1 only asks. For the tests.
int losskit_ce_bf16_ne(int set) {
    if (set == 0) use_ne.store(0);
    if (set == 1) {
        use_ne.store(-1);
        bf16_ne();
    }
    return bf16_ne() ? 1 : 0;
}

// Gradients of at least `bytes` are written with non-temporal stores (8 MiB unless set; a negative value only
// asks). Returns the value in force. For the tests and benchmarks.
int64_t losskit_ce_tiny_classes(int64_t classes) {
    if (classes >= 0) tiny_classes.store(classes);
    return tiny_classes.load();
}

double losskit_ce_stream_bytes(double bytes) {
    if (bytes >= 0) stream_bytes.store(bytes);
    return stream_bytes.load();
}

// Rows [0, n) in chunks over `threads` threads of the parallel loop (the caller's among them). Every chunk has
// run when the call returns, so an interrupted or forked caller never sees a thread still writing into its
// buffers. Returns 0, 1 + the first row whose target is outside [0, C), or -1 when
// memory for a scratch row could not be had.
int64_t losskit_ce_rows(int dtype, const void* x, int64_t ldx, void* g, int64_t ldg, int64_t n, int64_t c,
                        const int64_t* y, const float* w, double w_sum, double eps, double z, double scale,
                        const float* row_scale, float* rows, int threads) {
    const Options o{y, w, w_sum, eps, z, scale, row_scale, rows};
    // a gradient larger than the caches is written with non-temporal stores (see rows_kernel), unless its
    // pages are still to be faulted in: the kernel's fault handler clears each page through the cache first, and
    // plain stores then overwrite those lines where a streaming store would write the page to memory a second
    // time (measured: a fresh 4096×32000 fp32 gradient 71 ms with plain stores, 82 ms streamed)
    bool stream = g != nullptr && double(n) * double(c) * (dtype == 0 ? 4 : 2) >= stream_bytes.load();
#if defined(__linux__)
    if (stream) {
        const size_t page = size_t(sysconf(_SC_PAGESIZE));
        const uintptr_t middle = reinterpret_cast<uintptr_t>(g) + size_t(n / 2) * size_t(ldg) * (dtype == 0 ? 4 : 2);
        unsigned char resident = 1;
        if (mincore(reinterpret_cast<void*>(middle & ~(uintptr_t(page) - 1)), page, &resident) == 0 && !(resident & 1))
            stream = false;
    }
#endif
    if (g != nullptr && g != x && n > 0)  // a fresh gradient: huge pages before its first write (pages.h)
        losskit_pages::fresh_huge_pages(
            g, size_t(n - 1) * size_t(ldg) * (dtype == 0 ? 4 : 2) + size_t(c) * (dtype == 0 ? 4 : 2));
    auto part = [&](int64_t r0, int64_t r1) -> int64_t {
        try {
            if (dtype == 0)
                return rows_kernel<F32>(static_cast<const float*>(x), ldx, static_cast<float*>(g), ldg, r0, r1, c,
                                        o, stream);
            return rows_kernel<BF16>(static_cast<const uint16_t*>(x), ldx, static_cast<uint16_t*>(g), ldg, r0, r1,
                                     c, o, stream);
        } catch (...) {  // the bf16 scratch row could not be allocated; nothing may escape a thread
            return -1;
        }
    };
    if (threads <= 1 || n <= 1) return part(0, n);
    // Chunks of about CHUNK_ELEMENTS (whole rows) handed to the parallel loop (pool.h); each chunk's result kept
    // apart, so the first bad row is the same whichever thread met it.
    const int64_t rows_per = std::max<int64_t>(1, CHUNK_ELEMENTS / std::max<int64_t>(c, 1));
    const int64_t chunks = (n + rows_per - 1) / rows_per;
    std::vector<int64_t> bad(size_t(chunks), 0);
    auto body = [&](int64_t k) { bad[size_t(k)] = part(k * rows_per, std::min(n, (k + 1) * rows_per)); };
    losskit_pool::run(threads, chunks, body);
    for (const int64_t b : bad)
        if (b) return b;
    return 0;
}

}  // extern "C"

extern "C" {

// The whole of a small class-index cross entropy in one call, on the caller's thread (no thread start: at
// these sizes it would cost more than the work). Its arguments come in one struct, which the caller fills in
// place (a ctypes call converts each separate argument, ~0.15 µs apiece, as much as the kernel's own work on a
// few rows). The targets are checked (ignore_index skipped), the reduction's denominator Σ w_y over the kept
// rows is found, the row losses are written to `rows` (n floats; may be null unless reduction is 'none'), the
// gradient of the reduced loss to `g` when it is not null, and the reduced loss to `*loss` (reduction: 0 'none',
// 1 'mean', 2 'sum'; 'mean' over no kept weight is 0/0 = nan, as torch). Returns 0, 1 + the first row whose
// target is outside [0, C), or -1 when memory could not be had.
// SmallCall: kernels/calls.h

int64_t losskit_ce_small(const SmallCall* a) {
    try {
        const int64_t n = a->n, c = a->c;
        std::vector<int64_t> y(size_t(n > 0 ? n : 0));
        std::vector<float> own_rows(a->rows ? 0 : size_t(n));
        float* rows = a->rows ? a->rows : own_rows.data();
        const float* w = a->w;
        double denom = 0.0;
        for (int64_t r = 0; r < n; ++r) {
            const int64_t t = ld(a->y + r);
            if (t == a->ignore_index) {
                y[size_t(r)] = -1;
                continue;
            }
            if (t < 0 || t >= c) return r + 1;
            y[size_t(r)] = t;
            denom += w ? double(ld(w + t)) : 1.0;
        }
        double w_sum = double(c);
        if (w) {
            w_sum = 0.0;
            for (int64_t j = 0; j < c; ++j) w_sum += double(ld(w + j));
        }
        const double scale = a->reduction == 1 ? 1.0 / denom : 1.0;
        const Options o{y.data(), w, w_sum, a->eps, a->z, scale, nullptr, rows};
        int64_t bad;
        if (a->dtype == 0)
            bad = rows_kernel<F32>(static_cast<const float*>(a->x), a->ldx, static_cast<float*>(a->g), a->ldg, 0, n,
                                   c, o, false);
        else
            bad = rows_kernel<BF16>(static_cast<const uint16_t*>(a->x), a->ldx, static_cast<uint16_t*>(a->g), a->ldg,
                                    0, n, c, o, false);
        if (bad) return bad;
        if (a->loss) {
            double total = 0.0;
            for (int64_t r = 0; r < n; ++r) total += double(ld(rows + r));
            st(a->loss, float(a->reduction == 1 ? total / denom : total));
        }
        return 0;
    } catch (...) {
        return -1;
    }
}

}  // extern "C"
