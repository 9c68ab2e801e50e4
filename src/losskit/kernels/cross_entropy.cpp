// losskit's CPU cross-entropy kernel: loss and gradient of class-index cross entropy, one row at a time.
//
// Built on first use by losskit/_native.py (g++ -O3 -march=native, plain C ABI, loaded with ctypes, which
// releases the GIL for the call); rows are split over std::threads inside the call. Without a compiler
// losskit uses its torch-op path, which computes the same formulas.
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

namespace {

typedef float v16f __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));
typedef uint32_t v16u __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
constexpr int V = 16;

inline v16f splat(float a) { return v16f{} + a; }

// exp for a vector: Cephes' range reduction x = n·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial (about 1 ulp),
// 2^n applied as two factors so that results down to the subnormal range are right; 0 below expf's underflow.
// NaN propagates through the polynomial.
inline v16f vexp(v16f x) {
    const v16f t = x * 1.44269504088896341f;
    const v16f fn = (t + 12582912.0f) - 12582912.0f;  // round to nearest (|t| < 2^22)
    v16f r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    v16f p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    // clamp before converting (NaN and ±inf included: their results are masked or NaN through p below)
    v16f fc = fn > -252.0f ? fn : splat(-252.0f);
    fc = fc < 254.0f ? fc : splat(254.0f);
    const v16i n = __builtin_convertvector(fc, v16i);
    const v16i n1 = n >> 1, n2 = n - n1;
    v16f f1, f2;
    const v16i b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    std::memcpy(&f1, &b1, sizeof f1);
    std::memcpy(&f2, &b2, sizeof f2);
    v16f out = p * f1 * f2;
    out = x < -103.972084f ? splat(0.0f) : out;
    out = x > 88.7228394f ? splat(std::numeric_limits<float>::infinity()) : out;
    return out;
}

inline float sexp(float x) { return std::exp(x); }

inline v16f vmax(v16f a, v16f b) { return a > b ? a : b; }

inline float hmax(v16f a) {
    float m = a[0];
    for (int i = 1; i < V; ++i) m = a[i] > m ? a[i] : m;
    return m;
}

inline double hsum(v16f a) {
    double s = 0.0;
    for (int i = 0; i < V; ++i) s += a[i];
    return s;
}

// storage types: float, and bfloat16 kept as its 16 bits (fp32 arithmetic, round-to-nearest-even on store)
struct F32 {
    typedef float T;
    static inline v16f load(const T* p) {
        v16f v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static inline void store(T* p, v16f v) { std::memcpy(p, &v, sizeof v); }
    static inline float get(const T* p) { return *p; }
    static inline void put(T* p, float v) { *p = v; }
};

struct BF16 {
    typedef uint16_t T;
    static inline v16f load(const T* p) {
        v16h h;
        std::memcpy(&h, p, sizeof h);
        const v16u u = __builtin_convertvector(h, v16u) << 16;
        v16f v;
        std::memcpy(&v, &u, sizeof v);
        return v;
    }
    static inline void store(T* p, v16f v) {
        v16u u;
        std::memcpy(&u, &v, sizeof u);
        const v16u rounded = (u + (0x7fffu + ((u >> 16) & 1u))) >> 16;
        const v16u quiet = (u >> 16) | 0x40u;  // NaN stays NaN
        const v16u bits = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
        const v16h h = __builtin_convertvector(bits, v16h);
        std::memcpy(p, &h, sizeof h);
    }
    static inline float get(const T* p) {
        const uint32_t u = uint32_t(*p) << 16;
        float f;
        std::memcpy(&f, &u, sizeof f);
        return f;
    }
    static inline void put(T* p, float v) {
        uint32_t u;
        std::memcpy(&u, &v, sizeof u);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            *p = uint16_t((u >> 16) | 0x40u);
        } else {
            *p = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
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
        const int64_t y = o.y[r];
        if (y < 0) {
            o.rows[r] = 0.0f;
            if (gr) std::memset(static_cast<void*>(gr), 0, sizeof(T) * c);
            continue;
        }
        if (y >= c) return r + 1;
        // pass 1: the row's maximum
        v16f m0 = splat(-std::numeric_limits<float>::infinity()), m1 = m0, m2 = m0, m3 = m0;
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
        const v16f vm = splat(m);
        v16f s0 = splat(0.0f), s1 = s0, d0 = s0, d1 = s0;
        double sum_tail = 0.0, dot_tail = 0.0;
        float* e_row = in_grad ? reinterpret_cast<float*>(gr) : scratch.data();  // null without a gradient
        i = 0;
        for (; i + 2 * V <= cv; i += 2 * V) {
            const v16f a = IO::load(xr + i) - vm, b = IO::load(xr + i + V) - vm;
            const v16f ea = vexp(a), eb = vexp(b);
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
            const v16f a = IO::load(xr + i) - vm;
            const v16f ea = vexp(a);
            s0 += ea;
            if (gr) F32::store(e_row + i, ea);
            if (smooth) d0 += o.w ? a * F32::load(o.w + i) : a;
        }
        for (; i < c; ++i) {
            const float a = IO::get(xr + i) - m;
            const float ea = sexp(a);
            sum_tail += ea;
            if (gr) e_row[i] = ea;
            if (smooth) dot_tail += o.w ? double(a) * o.w[i] : double(a);
        }
        const double S = hsum(s0 + s1) + sum_tail;
        const double L = std::log(S), lse = double(m) + L;
        const double w_y = o.w ? double(o.w[y]) : 1.0;
        double loss = (1.0 - o.eps) * w_y * (L - (double(x_y) - double(m)));
        if (smooth) loss += eps_c * (L * o.w_sum - (hsum(d0 + d1) + dot_tail));
        if (o.z > 0.0) loss += o.z * lse * lse;
        o.rows[r] = float(loss);
        if (!gr) continue;
        // pass 3: the gradient (the target's entry is set after it, from fp32 values)
        const float e_y = e_row[y];
        const double s_n = o.row_scale ? o.scale * double(o.row_scale[r]) : o.scale;
        const double coef = ((1.0 - o.eps) * w_y + eps_c * o.w_sum + 2.0 * o.z * lse) * s_n;
        const float k = float(eps_c * s_n);
        const float hit = float(-(1.0 - o.eps) * w_y * s_n);
        // p·coef = exp(x - m)·(coef / S)
        const float f = float(coef / S);
        const v16f vf = splat(f), vk = splat(k);
        i = 0;
        for (; i < cv; i += V) {
            const v16f e = F32::load(e_row + i);
            v16f out = e * vf;
            if (smooth) out -= o.w ? vk * F32::load(o.w + i) : vk;
            IO::store(gr + i, out);
        }
        for (; i < c; ++i) {
            const float e = e_row[i];
            float out = e * f;
            if (smooth) out -= o.w ? k * o.w[i] : k;
            IO::put(gr + i, out);
        }
        float g_y = e_y * f + hit;
        if (smooth) g_y -= o.w ? k * o.w[y] : k;
        IO::put(gr + y, g_y);
    }
    return 0;
}

}  // namespace

extern "C" {

int losskit_kernel_version() { return 2; }

// Rows [0, n) split into `threads` contiguous ranges, one std::thread each (the caller's thread takes the
// first). One call from Python: nothing outlives it, so an interrupted or forked caller never sees threads
// still writing into its buffers. Returns 0, 1 + the first row whose target is outside [0, C), or -1 when
// memory for a scratch row could not be had.
int64_t losskit_ce_rows(int dtype, const void* x, int64_t ldx, void* g, int64_t ldg, int64_t n, int64_t c,
                        const int64_t* y, const float* w, double w_sum, double eps, double z, double scale,
                        const float* row_scale, float* rows, int threads) {
    const Options o{y, w, w_sum, eps, z, scale, row_scale, rows};
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
