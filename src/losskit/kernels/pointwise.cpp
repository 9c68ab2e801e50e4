// losskit's element-wise loss kernel: the loss l(x, t) and its gradient ∂l/∂x in one pass over the elements.
//
// torch computes an element-wise loss in its forward (reading x and t) and its gradient in backward (reading
// them again, writing the gradient), each behind a Python wrapper and an autograd node. Here one call reads
// each element once, sums the loss in double and writes the gradient of the reduced loss; the caller's backward
// only scales it by grad_output (not at all when that is 1). Built by losskit.engine.native_pointwise with the
// same flags and cache rules as the cross-entropy kernel; plain C ABI, no dependency beyond the C++ runtime.
//
// Elements go through vectors of one machine register (GCC vector extensions; the last few through one
// vector padded with harmless values), so an element's result does not depend on where it lies. float uses
// polynomial exp and log (≤ 2 ulp, tested against float64 in the test suite); double uses the C library's,
// element by element (float64 is the oracles' dtype, not a speed target).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "calls.h"
#include "pages.h"
#include "pool.h"

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

#if defined(__AVX512F__)
constexpr int VBYTES = 64;
#elif defined(__AVX__)
constexpr int VBYTES = 32;
#else
constexpr int VBYTES = 16;
#endif

template <class T>
struct Vec;

template <>
struct Vec<float> {
    typedef float V __attribute__((vector_size(VBYTES)));
    typedef int32_t I __attribute__((vector_size(VBYTES)));
};

template <>
struct Vec<double> {
    typedef double V __attribute__((vector_size(VBYTES)));
    typedef int64_t I __attribute__((vector_size(VBYTES)));
};

enum Kind : int64_t {
    MSE = 0,
    L1 = 1,
    HUBER = 2,         // p = delta
    SMOOTH_L1 = 3,     // p = beta > 0 (beta = 0 is L1)
    SOFT_MARGIN = 4,
    BCE_LOGITS = 5,
    BCE = 6,           // an input or target outside [0, 1] (or NaN) is reported; the caller raises
    KL = 7,            // target as probabilities
    KL_LOG = 8,        // target as log-probabilities
    POISSON_LOG = 9,   // x = log λ (torch's log_input=True)
    POISSON = 10,      // x = λ, p = eps
    HINGE_EMB = 11,    // p = margin; a target that is neither 1 nor -1 gets both terms, as torch
};

// Scalar reads and writes through memcpy: a tensor may start at any byte (torch.frombuffer at an odd offset),
// and a plain `*p` on a misaligned pointer is undefined behaviour.
template <class T>
inline T ld(const T* p) {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class T>
inline void st(T* p, T v) {
    std::memcpy(p, &v, sizeof v);
}

template <class T>
struct M {
    typedef typename Vec<T>::V V;
    typedef typename Vec<T>::I I;
    static constexpr int W = VBYTES / int(sizeof(T));

    static V splat(T a) { return V{} + a; }
    static V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(T* p, V v) { std::memcpy(p, &v, sizeof v); }
    static V abs(V a) {  // the sign bit cleared (|-0| = +0, NaN stays NaN)
        I bits;
        std::memcpy(&bits, &a, sizeof a);
        bits &= I{} + std::numeric_limits<typename std::remove_reference<decltype(bits[0])>::type>::max();
        std::memcpy(&a, &bits, sizeof a);
        return a;
    }
    static I lane_index() {
        I v = {};
        for (int l = 0; l < W; ++l) v[l] = l;
        return v;
    }
    static V sign(V a) { return a > 0 ? splat(1) : (a < 0 ? splat(-1) : splat(0)); }  // NaN -> 0, as torch.sign
    static V max0(V a) { return a > 0 ? a : splat(0); }                                 // NaN -> 0
};

// ---------------------------------------------------------------- transcendental functions

typedef M<float>::V vf;
typedef M<float>::I vi;

constexpr float LOG2E = 1.44269504088896341f, LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f;

// exp(x): x = n·ln2 + r, |r| ≤ ln2/2, e^r by a degree-6 polynomial, times 2^n. 0 below -87.34, inf above 88.72.
inline vf exp_f(vf x) {
    const vf lo = M<float>::splat(-87.3365479f), hi = M<float>::splat(88.7228394f);
    const vf xc = x < lo ? lo : (x > hi ? hi : x);  // NaN stays NaN
    const vf fn = __builtin_convertvector(__builtin_convertvector(xc * LOG2E + (xc < 0 ? -0.5f : 0.5f), vi), vf);
    vf r = xc - fn * LN2_HI;
    r = r - fn * LN2_LO;
    vf p = r * 1.3814611593261361e-3f + 8.368710055947304e-3f;
    p = r * p + 4.166838899254799e-2f;
    p = r * p + 1.666652113199234e-1f;
    p = r * p + 4.999999403953552e-1f;
    p = r * p + 1.0f;
    p = r * p + 1.0f;
    // 2^n in two factors, so that n = 128 (x near the top) does not overflow the exponent field
    const vi n = __builtin_convertvector(fn, vi);
    const vi n1 = n >> 1, n2 = n - n1;
    const vi b1 = (n1 + 127) << 23, b2 = (n2 + 127) << 23;
    vf s1, s2;
    std::memcpy(&s1, &b1, sizeof s1);
    std::memcpy(&s2, &b2, sizeof s2);
    const vf out = p * s1 * s2;
    const vf inf = M<float>::splat(std::numeric_limits<float>::infinity());
    return x < lo ? M<float>::splat(0.0f) : (x > hi ? inf : out);
}

// log(x) (Cephes' logf): x = m·2^e with m in [√½, √2), log(1 + f), f = m - 1, by a polynomial, plus e·ln2 in
// two parts. Subnormals are scaled first; 0 -> -inf, x < 0 or NaN -> NaN, inf -> inf.
inline vf log_f(vf x) {
    const vi tiny = x < 1.17549435e-38f;
    const vf xs = tiny ? x * 8388608.0f : x;  // 2^23
    vi bits;
    std::memcpy(&bits, &xs, sizeof bits);
    vi e = ((bits >> 23) & 0xff) - 126 - (tiny & 23);
    const vi mbits = (bits & 0x007fffff) | 0x3f000000;
    vf m;
    std::memcpy(&m, &mbits, sizeof m);  // [0.5, 1)
    const vi low = m < 0.707106781186547524f;
    e = e + low;  // low is -1 where true
    const vf f = low ? m + m - 1.0f : m - 1.0f;
    const vf z = f * f;
    vf y = f * 7.0376836292e-2f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    const vf ef = __builtin_convertvector(e, vf);
    y = y + ef * LN2_LO;
    y = y - 0.5f * z;
    vf r = f + y;
    r = r + ef * LN2_HI;
    const vf inf = M<float>::splat(std::numeric_limits<float>::infinity());
    const vf nan = M<float>::splat(std::numeric_limits<float>::quiet_NaN());
    r = x == 0.0f ? -inf : r;
    r = x == inf ? inf : r;
    return (x < 0.0f || x != x) ? nan : r;
}

typedef M<double>::V vd;

template <class F>
inline vd lanes(vd x, F f) {
    for (int l = 0; l < M<double>::W; ++l) x[l] = f(x[l]);
    return x;
}

inline vf vexp(vf x) { return exp_f(x); }
inline vd vexp(vd x) { return lanes(x, [](double a) { return std::exp(a); }); }
inline vf vlog(vf x) { return log_f(x); }
inline vd vlog(vd x) { return lanes(x, [](double a) { return std::log(a); }); }

// log(1 + u), accurate for small u too: log(w)·u/(w - 1) with w = 1 + u rounded (u where w rounds to 1)
template <class V>
inline V log1p_of(V u) {
    const V w = u + 1;
    return w == 1 ? u : vlog(w) * (u / (w - 1));
}

// e^-|z| and from it log(1 + e^z) without overflow, max(z, 0) + log1p(e^-|z|), and the logistic σ(z)
template <class T>
inline void softplus_sigmoid(typename M<T>::V z, typename M<T>::V& sp, typename M<T>::V& sig) {
    typedef M<T> m;
    const typename m::V e = vexp(-m::abs(z));
    sp = m::max0(z) + log1p_of(e);  // NaN in: e is NaN, and so is sp
    const typename m::V inv = 1 / (1 + e);
    sig = z >= 0 ? inv : e * inv;
}

// ---------------------------------------------------------------- one vector of elements

template <class T>
struct Out {
    typename M<T>::V l, g;
};

template <class T>
inline Out<T> element(Kind kind, typename M<T>::V x, typename M<T>::V t, T p) {
    typedef M<T> m;
    typedef typename m::V V;
    Out<T> o;
    switch (kind) {
        case MSE: {
            const V d = x - t;
            o.l = d * d;
            o.g = d * 2;
            break;
        }
        case L1: {
            const V d = x - t;
            o.l = m::abs(d);
            o.g = m::sign(d);
            break;
        }
        case HUBER: {
            const V d = x - t, a = m::abs(d);
            o.l = a < p ? (d * d) * T(0.5) : (a - T(0.5) * p) * p;
            o.g = d < -p ? m::splat(-p) : (d > p ? m::splat(p) : d);
            break;
        }
        case SMOOTH_L1: {
            const V d = x - t, a = m::abs(d);
            o.l = a < p ? (d * d) * T(0.5) / p : a - T(0.5) * p;
            o.g = d <= -p ? m::splat(-1) : (d >= p ? m::splat(1) : d / p);
            break;
        }
        case SOFT_MARGIN: {  // log(1 + e^(-t·x)), ∂/∂x = -t·σ(-t·x)
            V sp, sig;
            softplus_sigmoid<T>(-(t * x), sp, sig);
            o.l = sp;
            o.g = -(t * sig);
            break;
        }
        case BCE_LOGITS: {  // (1 - t)·x + log(1 + e^-x), as torch: max(-x, 0) + log1p(e^-|x|); ∂/∂x = σ(x) - t
            V sp, sig;
            softplus_sigmoid<T>(-x, sp, sig);  // sig = σ(-x) = 1 - σ(x)
            // added in torch's order, (1 - t)·x + max(-x, 0) first: for x << 0 those two cancel exactly
            const V e = vexp(-m::abs(x));
            o.l = ((1 - t) * x + m::max0(-x)) + log1p_of(e);
            o.g = (1 - sig) - t;
            break;
        }
        case BCE: {  // -(t·max(log p, -100) + (1 - t)·max(log(1 - p), -100)); ∂/∂p = (p - t) / max(p(1 - p), 1e-12f)
            const V floor = m::splat(-100);
            V lp = vlog(x), lq = log1p_of(-x);
            lp = lp < floor ? floor : lp;
            lq = lq < floor ? floor : lq;
            o.l = -(t * lp + (1 - t) * lq);
            const V den = x * (1 - x);
            const T eps = T(1e-12f);  // torch's kernel clamps at the float 1e-12, for double inputs too
            o.g = (x - t) / (den < eps ? m::splat(eps) : den);
            break;
        }
        case KL: {  // xlogy(t, t) - t·x, ∂/∂x = -t
            const V tl = t * vlog(t);
            o.l = (t == 0 ? m::splat(0) : tl) - t * x;
            o.g = -t;
            break;
        }
        case POISSON_LOG: {  // e^x - t·x, ∂/∂x = e^x - t
            const V ex = vexp(x);
            o.l = ex - t * x;
            o.g = ex - t;
            break;
        }
        case POISSON: {  // x - t·log(x + eps), ∂/∂x = 1 - t / (x + eps)
            const V xe = x + p;
            o.l = x - t * vlog(xe);
            o.g = 1 - t / xe;
            break;
        }
        case HINGE_EMB: {  // [t ≠ 1]·max(0, p - x) + [t ≠ -1]·x, ∂/∂x = [t ≠ -1] - [t ≠ 1]·[p - x ≥ 0]
            const V z = p - x;
            const V zero = m::splat(0), one = m::splat(1);
            o.l = (t != 1 ? (z < 0 ? zero : z) : zero) + (t != -1 ? x : zero);  // clamp keeps a NaN, as torch
            o.g = (t != -1 ? one : zero) - (t != 1 ? (z >= 0 ? one : zero) : zero);
            break;
        }
        case KL_LOG: {  // e^t·(t - x), ∂/∂x = -e^t
            const V et = vexp(t);
            o.l = et * (t - x);
            o.g = -et;
            break;
        }
    }
    return o;
}

// ---------------------------------------------------------------- the loop

template <class T>
struct Range {
    double total = 0.0;
    int64_t bad = 0;  // 1 + the first BCE element whose input or target is outside [0, 1]
};

// The losses of one vector added to double accumulators (float: its two halves converted)
inline void accumulate(vd& a0, vd&, vd l) { a0 += l; }
inline void accumulate(vd& a0, vd& a1, vf l) {
    // the halves converted in registers (through memory, the upper half's load would wait on store forwarding)
#if defined(__AVX512F__)
    const __m512 v = __m512(l);
    a0 += vd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 0))));
    a1 += vd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
#elif defined(__AVX__)
    const __m256 v = __m256(l);
    a0 += vd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    a1 += vd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
#else
    typedef float half __attribute__((vector_size(VBYTES / 2)));
    half lo, hi;
    std::memcpy(&lo, &l, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&l) + sizeof lo, sizeof hi);
    a0 += __builtin_convertvector(lo, vd);
    a1 += __builtin_convertvector(hi, vd);
#endif
}

template <class T>
Range<T> run_range(Kind kind, const T* x, const T* t, T* g, T* out, int64_t i0, int64_t i1, T p, T gscale) {
    typedef M<T> m;
    typedef typename m::V V;
    constexpr int W = m::W;
    Range<T> r;
    vd a0 = {}, a1 = {};
    const typename m::I lane = m::lane_index();
    for (int64_t i = i0; i < i1; i += W) {
        const int count = i + W <= i1 ? W : int(i1 - i);
        V xv, tv;
        if (count == W) {
            xv = m::load(x + i);
            tv = m::load(t + i);
        } else {  // padded with a value that is valid for every kind (x = t = 0.5)
            xv = m::splat(T(0.5));
            tv = m::splat(T(0.5));
            for (int k = 0; k < count; ++k) {
                xv[k] = ld(x + i + k);
                tv[k] = ld(t + i + k);
            }
        }
        if (kind == BCE) {
            for (int k = 0; k < count; ++k)
                if (!(xv[k] >= 0 && xv[k] <= 1) || !(tv[k] >= 0 && tv[k] <= 1)) {
                    if (!r.bad) r.bad = i + k + 1;
                }
        }
        const Out<T> o = element<T>(kind, xv, tv, p);
        accumulate(a0, a1, count == W ? o.l : (lane < count ? o.l : m::splat(0)));
        if (out) {
            if (count == W) {
                m::store(out + i, o.l);
            } else {
                for (int k = 0; k < count; ++k) st(out + i + k, T(o.l[k]));
            }
        }
        if (g) {
            const V gv = gscale == T(1) ? o.g : o.g * gscale;
            if (count == W) {
                m::store(g + i, gv);
            } else {
                for (int k = 0; k < count; ++k) st(g + i + k, T(gv[k]));
            }
        }
    }
    for (int k = 0; k < M<double>::W; ++k) r.total += a0[k] + a1[k];
    return r;
}


// ---------------------------------------------------------------- NLL: one gathered entry per row

// Negative log-likelihood of (n, c) rows of log-probabilities against class indices: the loss
// -Σ w_y·x[r, y_r] (over the rows whose target is not ignore_index), divided by Σ w_y for 'mean', and its
// gradient, -w_y·gscale at each row's target and 0 elsewhere (gscale: 1/Σ w_y for 'mean', else 1, unless the
// caller gives one). Returns 0, or 1 + the first row whose target is outside [0, c).
// NllCall: kernels/calls.h

template <class T>
int64_t nll(NllCall* a) {
    const T* x = static_cast<const T*>(a->x);
    const T* w = static_cast<const T*>(a->w);
    T* g = static_cast<T*>(a->g);
    double total = 0.0, denom = 0.0;
    for (int64_t r = 0; r < a->n; ++r) {
        const int64_t t = ld(a->y + r);
        if (t == a->ignore_index) continue;
        if (t < 0 || t >= a->c) return r + 1;
        const T wt = w ? ld(w + t) : T(1);
        total += double(-(ld(x + r * a->c + t) * wt));
        denom += double(wt);
    }
    a->denom = denom;
    const double value = a->mean ? total / denom : total;
    st(static_cast<T*>(a->loss), T(value));
    if (!g) return 0;
    // torch: w_y · -(grad_output / Σ w_y); grad_output = 1 here unless the caller's gscale says otherwise
    const T scale = a->has_scale ? T(a->gscale) : (a->mean ? T(1) / T(denom) : T(1));
    // Each chunk of rows is zeroed and its picked entries written while the rows are in the writing core's
    // cache (zeroing the whole buffer first and then writing one entry per row misses on every row once it
    // no longer fits in cache: a third of the time at 1024×1000).
    losskit_pages::fresh_huge_pages(g, sizeof(T) * size_t(a->n) * size_t(a->c));  // a fresh gradient (pages.h)
    const int64_t c = a->c, rows = std::max<int64_t>(1, (int64_t(1) << 14) / std::max<int64_t>(c, 1));
    const int64_t chunks = (a->n + rows - 1) / rows;
    auto body = [&](int64_t k) {
        const int64_t r0 = k * rows, r1 = std::min(a->n, r0 + rows);
        std::memset(static_cast<void*>(g + r0 * c), 0, sizeof(T) * size_t(r1 - r0) * size_t(c));
        for (int64_t r = r0; r < r1; ++r) {
            const int64_t t = ld(a->y + r);
            if (t == a->ignore_index) continue;
            const T wt = w ? ld(w + t) : T(1);
            st(g + r * c + t, T(wt * -scale));
        }
    };
    losskit_pool::run(int(a->threads < 1 ? 1 : a->threads), chunks, body);
    return 0;
}

// ---------------------------------------------------------------- multi-label margin: pairs within a row

// Σ_{j ∈ T_r} Σ_{i ∉ T_r} max(0, 1 - (x_j - x_i)) / c per row r, T_r the classes listed in y's row before its
// first -1 (a class listed twice counts twice, as in torch); 'mean' divides the rows' sum by n. The gradient
// accumulates ∓g per active pair, g = 1/(n·c) for 'mean' and 1/c for 'sum', then is multiplied by the caller's
// grad_output when has_scale (torch's order). Returns 0, or 1 + the first row with an entry outside [-1, c).
// MlmCall: kernels/calls.h

template <class T>
int64_t mlm(const MlmCall* a) {
    const T* x = static_cast<const T*>(a->x);
    T* g = static_cast<T*>(a->g);
    const int64_t n = a->n, c = a->c;
    std::vector<char> listed(size_t(c > 0 ? c : 0));
    if (g) std::memset(static_cast<void*>(g), 0, sizeof(T) * size_t(n) * size_t(c));
    const T unit = T(a->mean ? 1.0 / (double(n) * double(c)) : 1.0 / double(c));
    double total = 0.0;
    for (int64_t r = 0; r < n; ++r) {
        const T* xr = x + r * c;
        const int64_t* yr = a->y + r * c;
        T* gr = g ? g + r * c : nullptr;
        std::fill(listed.begin(), listed.end(), 0);
        for (int64_t k = 0; k < c; ++k) {  // every entry in [-1, c), the padding after the first -1 too (torch)
            const int64_t t = ld(yr + k);
            if (t < -1 || t >= c) return r + 1;
        }
        int64_t k = 0;
        for (; k < c; ++k) {
            const int64_t t = ld(yr + k);
            if (t == -1) break;
            listed[size_t(t)] = 1;
        }
        double row = 0.0;
        for (int64_t j = 0; j < k; ++j) {
            const int64_t tj = ld(yr + j);
            const T xt = ld(xr + tj);
            for (int64_t i = 0; i < c; ++i) {
                if (listed[size_t(i)]) continue;
                const T z = T(1) - xt + ld(xr + i);
                if (z > 0) {
                    row += double(z);
                    if (gr) {
                        st(gr + tj, T(ld(gr + tj) - unit));
                        st(gr + i, T(ld(gr + i) + unit));
                    }
                }
            }
        }
        total += double(T(row / double(c)));
    }
    st(static_cast<T*>(a->loss), T(a->mean ? total / double(n) : total));
    if (g && a->has_scale) {
        const T s = T(a->gscale);
        for (int64_t i = 0; i < n * c; ++i) st(g + i, T(ld(g + i) * s));
    }
    return 0;
}

// ---------------------------------------------------------------- multi-class margin: one row against its target

// Σ_{i ≠ y_r} w_{y_r}·max(0, margin - x_{y_r} + x_i)^p / c per row (p = 1 or 2), the rows summed ('mean': / n);
// the gradient in torch's order: h = g (p = 1) or 2·g·z (p = 2) times w_y per active class, minus their sum at
// the target, g = 1/(n·c) for 'mean' and 1/c for 'sum', then times the caller's grad_output when has_scale.
// Returns 0, or 1 + the first row whose target is outside [0, c).
// MmCall: kernels/calls.h

template <class T>
int64_t multi_margin(const MmCall* a) {
    const T* x = static_cast<const T*>(a->x);
    const T* w = static_cast<const T*>(a->w);
    T* g = static_cast<T*>(a->g);
    const int64_t n = a->n, c = a->c;
    const T margin = T(a->margin);
    const T unit = T(a->mean ? 1.0 / (double(n) * double(c)) : 1.0 / double(c));
    double total = 0.0;
    for (int64_t r = 0; r < n; ++r) {
        const int64_t y = ld(a->y + r);
        if (y < 0 || y >= c) return r + 1;
        const T* xr = x + r * c;
        T* gr = g ? g + r * c : nullptr;
        const T xy = ld(xr + y);
        const T wy = w ? ld(w + y) : T(1);
        T sum = 0, gsum = 0;
        // without branches (selects): whether a class is active is data, a coin flip for random scores, and a
        // mispredicted branch per class cost more than the arithmetic (the 32×10 kernel call: 0.85 → 0.75 µs); the
        // inactive classes add exact zeros, so the sums are the branchy loop's, bit for bit
        for (int64_t i = 0; i < c; ++i) {
            const T z = margin - xy + ld(xr + i);
            const bool on = (z > 0) & (i != y);  // NaN: off, as before
            T l = a->p == 1 ? z : z * z;
            T h = a->p == 1 ? unit : T(2) * unit * z;
            if (w) {
                l *= wy;
                h *= wy;
            }
            l = on ? l : T(0);
            h = on ? h : T(0);
            sum += l;
            gsum += h;
            if (gr) st(gr + i, h);
        }
        if (gr) st(gr + y, T(-gsum));
        total += double(T(sum / T(c)));
    }
    st(static_cast<T*>(a->loss), T(a->mean ? total / double(n) : total));
    if (g && a->has_scale) {
        const T s = T(a->gscale);
        for (int64_t i = 0; i < n * c; ++i) st(g + i, T(ld(g + i) * s));
    }
    return 0;
}

// ---------------------------------------------------------------- margin ranking: two inputs differentiated

// max(0, -y·(x1 - x2) + margin) per element, summed in double ('mean': / n); the gradients of the reduced loss,
// ∓y·[z ≥ 0]·scale (torch's clamp passes the gradient at z = 0; NaN passes none), to g1 and g2 when not null.
struct MrCall {
    int64_t dtype;  // 0 float, 1 double
    const void* x1;
    const void* x2;
    const void* y;
    void* g1;
    void* g2;
    void* loss;
    int64_t n;
    double margin;
    int64_t mean;
    double gscale;  // the gradients' factor (1/n for 'mean' unless the caller's grad_output says otherwise)
};

template <class T>
void margin_ranking(const MrCall* a) {
    const T* x1 = static_cast<const T*>(a->x1);
    const T* x2 = static_cast<const T*>(a->x2);
    const T* y = static_cast<const T*>(a->y);
    T* g1 = static_cast<T*>(a->g1);
    T* g2 = static_cast<T*>(a->g2);
    const T margin = T(a->margin), scale = T(a->gscale);
    double total = 0.0;
    for (int64_t i = 0; i < a->n; ++i) {
        const T yi = ld(y + i);
        const T z = -yi * (ld(x1 + i) - ld(x2 + i)) + margin;
        total += double(z < 0 ? T(0) : z);  // a NaN stays NaN, as torch's clamp_min
        const T d = z >= 0 ? yi * scale : T(0);
        if (g1) st(g1 + i, T(-d));
        if (g2) st(g2 + i, d);
    }
    st(static_cast<T*>(a->loss), T(a->mean ? total / double(a->n) : total));
}

// ---------------------------------------------------------------- Gaussian NLL: input and variance differentiated

// ½·(log v + (x - t)²/v) per element (+ ½·log 2π when full), v = max(var, eps) (the clamp passes the gradient
// as the identity, as torch's clamp of a clone under no_grad), summed in double ('mean': / n); the gradients of
// the reduced loss, (x - t)/v·scale and ½·(1/v - (x - t)²/v²)·scale, to gx and gv when not null.
// Returns 0, or 1 + the first element whose var is negative (or NaN): the caller's checks raise.
struct GnCall {
    int64_t dtype;  // 0 float, 1 double
    const void* x;
    const void* t;
    const void* v;
    void* gx;
    void* gv;
    void* loss;
    int64_t n;
    double eps;
    int64_t full;
    int64_t mean;
    double gscale;
};

template <class T>
int64_t gaussian_nll(const GnCall* a) {
    const T* x = static_cast<const T*>(a->x);
    const T* t = static_cast<const T*>(a->t);
    const T* var = static_cast<const T*>(a->v);
    T* gx = static_cast<T*>(a->gx);
    T* gv = static_cast<T*>(a->gv);
    const T eps = T(a->eps), scale = T(a->gscale);
    const T half_log_2pi = T(0.91893853320467274178);
    double total = 0.0;
    for (int64_t i = 0; i < a->n; ++i) {
        const T v0 = ld(var + i);
        if (!(v0 >= 0)) return i + 1;
        const T v = v0 < eps ? eps : v0;
        const T d = ld(x + i) - ld(t + i);
        T l = T(0.5) * (std::log(v) + d * d / v);
        if (a->full) l += half_log_2pi;
        total += double(l);
        if (gx) st(gx + i, T(d / v * scale));
        if (gv) st(gv + i, T(T(0.5) * (T(1) / v - d * d / (v * v)) * scale));
    }
    st(static_cast<T*>(a->loss), T(a->mean ? total / double(a->n) : total));
    return 0;
}
}  // namespace

extern "C" {

int losskit_kernel_version() { return 10; }

int64_t losskit_gaussian_nll(const GnCall* a) {
    return a->dtype == 0 ? gaussian_nll<float>(a) : gaussian_nll<double>(a);
}

void losskit_margin_ranking(const MrCall* a) {
    if (a->dtype == 0)
        margin_ranking<float>(a);
    else
        margin_ranking<double>(a);
}

int64_t losskit_multi_margin(const MmCall* a) {
    return a->dtype == 0 ? multi_margin<float>(a) : multi_margin<double>(a);
}

int64_t losskit_multilabel_margin(const MlmCall* a) { return a->dtype == 0 ? mlm<float>(a) : mlm<double>(a); }

int64_t losskit_nll(NllCall* a) { return a->dtype == 0 ? nll<float>(a) : nll<double>(a); }

// PointCall (kernels/calls.h): one call's arguments in one struct.

// Returns 0, or 1 + the index of the first BCE element whose input or target is outside [0, 1] (the caller's
// general path then raises the clear error). A thread that cannot be had leaves its range to the caller's.
int64_t losskit_pointwise(const PointCall* a) {
    const Kind kind = Kind(a->kind);
    const int64_t n = a->n;
    const int threads = int(a->threads < 1 ? 1 : a->threads);
    constexpr int64_t CHUNK = int64_t(1) << 14;  // elements; a multiple of every vector width
    auto work = [&](int64_t i0, int64_t i1) -> std::pair<double, int64_t> {
        if (a->dtype == 0) {
            const Range<float> r = run_range<float>(kind, static_cast<const float*>(a->x), static_cast<const float*>(a->t),
                                                    static_cast<float*>(a->g), static_cast<float*>(a->out), i0, i1,
                                                    float(a->p), float(a->gscale));
            return {r.total, r.bad};
        }
        const Range<double> r = run_range<double>(kind, static_cast<const double*>(a->x),
                                                  static_cast<const double*>(a->t), static_cast<double*>(a->g),
                                                  static_cast<double*>(a->out), i0, i1, a->p, a->gscale);
        return {r.total, r.bad};
    };
    // Fixed chunks, each with its own partial sum, added up in chunk order: the loss is the same bits for any
    // number of threads (and whichever thread ran a chunk).
    const size_t item = a->dtype == 0 ? sizeof(float) : sizeof(double);
    losskit_pages::fresh_huge_pages(a->g, size_t(n) * item);  // fresh outputs: huge pages first (pages.h)
    losskit_pages::fresh_huge_pages(a->out, size_t(n) * item);
    const int64_t chunks = n <= CHUNK ? 1 : (n + CHUNK - 1) / CHUNK;
    std::vector<std::pair<double, int64_t>> part(size_t(chunks), {0.0, 0});
    auto body = [&](int64_t k) {
        const int64_t i0 = k * CHUNK;
        part[size_t(k)] = work(i0, chunks == 1 ? n : std::min(n, i0 + CHUNK));
    };
    losskit_pool::run(threads, chunks, body);
    double total = 0.0;
    int64_t bad = 0;
    for (const auto& pr : part) {
        total += pr.first;
        if (pr.second && !bad) bad = pr.second;
    }
    if (bad) return bad;
    if (a->loss) {
        const double v = total / a->ldiv;
        if (a->dtype == 0) {
            const float f = float(v);
            std::memcpy(a->loss, &f, sizeof f);
        } else {
            std::memcpy(a->loss, &v, sizeof v);
        }
    }
    return 0;
}

}  // extern "C"

#include "embedding.h"
