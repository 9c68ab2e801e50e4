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

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>
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

inline vf splat(float a) { return vf{} + a; }

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

// exp(x) for x ≤ 0 or NaN, the only arguments it gets (x - max of the row): Cephes' range reduction
// x = n·ln2 + r, |r| ≤ ln2/2, and its degree-6 polynomial (about 1 ulp); 2^n built in the exponent bits. Results
// below the smallest normal float (x < -87.3, true value < 1.2e-38) are 0, which no loss or gradient can tell
// from the subnormal; NaN propagates through the polynomial.
inline vf vexp(vf x) {
    const vf t = x * 1.44269504088896341f;
    vf fn = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
    fn = fn > -126.0f ? fn : splat(-126.0f);   // -inf and the underflow range: masked below
    vf r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const vi bits = (__builtin_convertvector(fn, vi) + 127) << 23;
    vf scale;
    std::memcpy(&scale, &bits, sizeof scale);
    const vf out = p * scale;
    return x < -87.3365479f ? splat(0.0f) : out;
}

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
    static inline float get(const T* p) { return ld(p); }
    static inline void put(T* p, float v) { st(p, v); }
};

struct BF16 {
    typedef uint16_t T;
    static inline vf load(const T* p) {
        vh h;
        std::memcpy(&h, p, sizeof h);
        const vu u = __builtin_convertvector(h, vu) << 16;
        vf v;
        std::memcpy(&v, &u, sizeof v);
        return v;
    }
    static inline vh round(vf v) {
        vu u;
        std::memcpy(&u, &v, sizeof u);
        const vu rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
        const vu quiet = (u >> 16) | 0x40u;  // NaN stays NaN
        const vu bits = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
        return __builtin_convertvector(bits, vh);
    }
    static inline void store(T* p, vf v) {
        const vh h = round(v);
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

struct Options {
    const int64_t* y;         // target per row, -1 when ignored
    const float* w;           // class weights, or null for ones
    double w_sum;             // Σ_c w_c (C when w is null)
    double eps, z;            // label smoothing, z-loss coefficient
    double scale;             // the reduction's scale (1 for 'sum' and 'none')
    const float* row_scale;   // per-row factor, or null
    float* rows;              // out: per-row loss
};

// Rows [r0, r1) of x (row stride ldx) -> o.rows and, when g is not null, the gradient (row stride ldg; g may be
// x itself). Returns 0, or 1 + the index of a row whose target is outside [0, C) (nothing written for it).
template <class IO>
int64_t rows_kernel(const typename IO::T* x, int64_t ldx, typename IO::T* g, int64_t ldg, int64_t r0, int64_t r1,
                    int64_t c, const Options& o) {
    typedef typename IO::T T;
    // pass 2 keeps exp(x - m) for pass 3, which only rescales it: in the fp32 gradient row itself, or for bf16 in
    // an fp32 scratch row (rounding once, at the end)
    constexpr bool in_grad = sizeof(T) == sizeof(float);
    std::vector<float> scratch(in_grad || !g ? 0 : size_t(c));
    const int64_t cv = c - c % V;
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
        // pass 1: the row's maximum
        vf m0 = splat(-std::numeric_limits<float>::infinity()), m1 = m0, m2 = m0, m3 = m0;
        int64_t i = 0;
        for (; i + 4 * V <= cv; i += 4 * V) {
            m0 = vmax(m0, IO::load(xr + i));
            m1 = vmax(m1, IO::load(xr + i + V));
            m2 = vmax(m2, IO::load(xr + i + 2 * V));
            m3 = vmax(m3, IO::load(xr + i + 3 * V));
        }
        for (; i < cv; i += V) m0 = vmax(m0, IO::load(xr + i));
        float m = hmax(vmax(vmax(m0, m1), vmax(m2, m3)));
        for (; i < c; ++i) {
            const float v = IO::get(xr + i);
            m = v > m ? v : m;
        }
        const float x_y = IO::get(xr + y);  // read now: with g == x, passes 2 and 3 overwrite the row
        // pass 2: Σ exp(x - m), and Σ w·(x - m) when smoothing
        const bool smooth = o.eps > 0.0;
        const vf vm = splat(m);
        vf s0 = splat(0.0f), s1 = s0, d0 = s0, d1 = s0;
        double sum_tail = 0.0, dot_tail = 0.0;
        float* e_row = in_grad ? reinterpret_cast<float*>(gr) : scratch.data();  // null without a gradient
        i = 0;
        for (; i + 2 * V <= cv; i += 2 * V) {
            const vf a = IO::load(xr + i) - vm, b = IO::load(xr + i + V) - vm;
            const vf ea = vexp(a), eb = vexp(b);
            s0 += ea;
            s1 += eb;
            if (gr) {
                F32::store(e_row + i, ea);
                F32::store(e_row + i + V, eb);
            }
            if (smooth) {
                if (o.w) {
                    d0 += a * F32::load(o.w + i);
                    d1 += b * F32::load(o.w + i + V);
                } else {
                    d0 += a;
                    d1 += b;
                }
            }
        }
        for (; i < cv; i += V) {
            const vf a = IO::load(xr + i) - vm;
            const vf ea = vexp(a);
            s0 += ea;
            if (gr) F32::store(e_row + i, ea);
            if (smooth) d0 += o.w ? a * F32::load(o.w + i) : a;
        }
        for (; i < c; ++i) {
            const float a = IO::get(xr + i) - m;
            const float ea = sexp(a);
            sum_tail += ea;
            if (gr) F32::put(e_row + i, ea);
            if (smooth) dot_tail += o.w ? double(a) * ld(o.w + i) : double(a);
        }
        const double S = hsum(s0 + s1) + sum_tail;
        const double L = std::log(S), lse = double(m) + L;
        const double w_y = o.w ? double(ld(o.w + y)) : 1.0;
        double loss = (1.0 - o.eps) * w_y * (L - (double(x_y) - double(m)));
        if (smooth) loss += eps_c * (L * o.w_sum - (hsum(d0 + d1) + dot_tail));
        if (o.z > 0.0) loss += o.z * lse * lse;
        st(o.rows + r, float(loss));
        if (!gr) continue;
        // pass 3: the gradient (the target's entry is set after it, from fp32 values)
        const float e_y = F32::get(e_row + y);
        const double s_n = o.row_scale ? o.scale * double(ld(o.row_scale + r)) : o.scale;
        const double coef = ((1.0 - o.eps) * w_y + eps_c * o.w_sum + 2.0 * o.z * lse) * s_n;
        const float k = float(eps_c * s_n);
        const float hit = float(-(1.0 - o.eps) * w_y * s_n);
        // p·coef = exp(x - m)·(coef / S)
        const float f = float(coef / S);
        const vf vfac = splat(f), vk = splat(k);
        auto one = [&](int64_t j) {
            float out = F32::get(e_row + j) * f;
            if (smooth) out -= o.w ? k * ld(o.w + j) : k;
            IO::put(gr + j, out);
        };
        for (i = 0; i + V <= c; i += V) {
            const vf e = F32::load(e_row + i);
            vf out = e * vfac;
            if (smooth) out -= o.w ? vk * F32::load(o.w + i) : vk;
            IO::store(gr + i, out);
        }
        for (; i < c; ++i) one(i);
        float g_y = e_y * f + hit;
        if (smooth) g_y -= o.w ? k * ld(o.w + y) : k;
        IO::put(gr + y, g_y);
    }
    return 0;
}

}  // namespace

extern "C" {

int losskit_kernel_version() { return 3; }

// Rows [0, n) split into `threads` contiguous ranges, one std::thread each (the caller's thread takes the
// first). One call from Python: nothing outlives it, so an interrupted or forked caller never sees threads
// still writing into its buffers. Returns 0, 1 + the first row whose target is outside [0, C), or -1 when
// memory for a scratch row could not be had.
int64_t losskit_ce_rows(int dtype, const void* x, int64_t ldx, void* g, int64_t ldg, int64_t n, int64_t c,
                        const int64_t* y, const float* w, double w_sum, double eps, double z, double scale,
                        const float* row_scale, float* rows, int threads) {
    const Options o{y, w, w_sum, eps, z, scale, row_scale, rows};
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // A fresh gradient buffer is mapped but not yet touched: writing it costs a page fault (and a page cleared)
    // per 4 KiB, about as much time as the kernel itself. Ask for transparent huge pages (2 MiB) on the whole
    // 2 MiB-aligned part of it first; where THP is off (or the pages exist already) this changes nothing.
    if (g != nullptr && g != x && n > 0) {
        const size_t bytes = size_t(n - 1) * size_t(ldg) * (dtype == 0 ? 4 : 2) + size_t(c) * (dtype == 0 ? 4 : 2);
        constexpr uintptr_t huge = uintptr_t(1) << 21;
        const uintptr_t lo = (reinterpret_cast<uintptr_t>(g) + huge - 1) & ~(huge - 1);
        const uintptr_t hi = (reinterpret_cast<uintptr_t>(g) + bytes) & ~(huge - 1);
        if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
    }
#endif
    auto part = [&](int64_t r0, int64_t r1) -> int64_t {
        try {
            if (dtype == 0)
                return rows_kernel<F32>(static_cast<const float*>(x), ldx, static_cast<float*>(g), ldg, r0, r1, c,
                                        o);
            return rows_kernel<BF16>(static_cast<const uint16_t*>(x), ldx, static_cast<uint16_t*>(g), ldg, r0, r1,
                                     c, o);
        } catch (...) {  // the bf16 scratch row could not be allocated; nothing may escape a thread
            return -1;
        }
    };
    if (threads > n) threads = int(n);
    if (threads <= 1) return part(0, n);
    std::vector<int64_t> bad(size_t(threads), 0);
    std::vector<std::thread> pool;
    pool.reserve(size_t(threads - 1));
    for (int k = 1; k < threads; ++k) {
        const int64_t r0 = n * k / threads, r1 = n * (k + 1) / threads;
        try {
            pool.emplace_back([&, k, r0, r1] { bad[size_t(k)] = part(r0, r1); });
        } catch (...) {  // no thread to be had: do that range here
            bad[size_t(k)] = part(r0, r1);
        }
    }
    bad[0] = part(0, n / threads);
    for (auto& t : pool) t.join();
    for (const int64_t b : bad)
        if (b) return b;
    return 0;
}

}  // extern "C"

extern "C" {

// The whole of a small class-index cross entropy in one call, on the caller's thread (no thread start: at
// these sizes it would cost more than the work): the targets are checked (ignore_index skipped), the
// reduction's denominator Σ w_y over the kept rows is found, the rows and, when g is not null, the gradient of
// the reduced loss are written, and the reduced loss is returned through *loss (reduction: 0 'none', 1 'mean',
// 2 'sum'; 'mean' over no kept weight is 0/0 = nan, as torch). `rows` (n + 1 floats) receives the row losses
// and, at rows[n], the reduced loss. Returns 0, 1 + the first row whose target is outside [0, C), or -1 when
// memory could not be had.
int64_t losskit_ce_small(int dtype, const void* x, int64_t ldx, void* g, int64_t ldg, int64_t n, int64_t c,
                         const int64_t* y_in, int64_t ignore_index, const float* w, double eps, double z,
                         int reduction, float* rows) {
    try {
        std::vector<int64_t> y(size_t(n > 0 ? n : 0));
        double denom = 0.0;
        for (int64_t r = 0; r < n; ++r) {
            int64_t t;
            std::memcpy(&t, y_in + r, sizeof(t));
            if (t == ignore_index) {
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
        const double scale = reduction == 1 ? 1.0 / denom : 1.0;
        const Options o{y.data(), w, w_sum, eps, z, scale, nullptr, rows};
        int64_t bad;
        if (dtype == 0)
            bad = rows_kernel<F32>(static_cast<const float*>(x), ldx, static_cast<float*>(g), ldg, 0, n, c, o);
        else
            bad = rows_kernel<BF16>(static_cast<const uint16_t*>(x), ldx, static_cast<uint16_t*>(g), ldg, 0, n, c,
                                    o);
        if (bad) return bad;
        double total = 0.0;
        for (int64_t r = 0; r < n; ++r) total += double(ld(rows + r));
        st(rows + n, float(reduction == 1 ? total / denom : total));
        return 0;
    } catch (...) {
        return -1;
    }
}

}  // extern "C"
