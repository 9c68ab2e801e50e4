// losskit's CPU CTC kernel: the alpha recursion (forward) and the beta recursion with the gradient (backward).
//
// Built on first use by losskit/engine/native_ctc.py (plain C ABI, loaded with ctypes, which releases the GIL
// for the call); samples are split over std::threads inside the call. Without a compiler losskit uses its
// torch-op path (a loop over time of vectorised ops), which computes the same formulas.
//
// For one sample with log-probabilities lp[t][c] (t < T_n = input length), target l_1..l_S (S = target
// length) and the extended label sequence l' = (blank, l_1, blank, l_2, ..., l_S, blank) of length 2S+1:
//
//   alpha_0(0) = lp[0][blank],  alpha_0(1) = lp[0][l_1],  alpha_0(s > 1) = -inf
//   alpha_t(s) = lse(alpha_{t-1}(s), alpha_{t-1}(s-1), [l'(s) != l'(s-2)] alpha_{t-1}(s-2)) + lp[t][l'(s)]
//   nll = -lse(alpha_{T_n-1}(2S), alpha_{T_n-1}(2S-1))
//
// with lse(a, b, c) = m + log(exp(a-m) + exp(b-m) + exp(c-m)), m = max (torch's formula and order, so the
// forward is bit for bit torch's). beta is the same recursion run backward in time (two rolling rows, never a
// (T, 2S+1) buffer); the gradient of nll with respect to lp, in torch's convention (log_probs are assumed to
// come from a log_softmax, whose Jacobian adds exp(lp)), is
//
//   grad[t][c] = g · (exp(lp[t][c]) - Σ_{s: l'(s) = c} exp(alpha_t(s) + beta_t(s) + nll - lp[t][c]))
//
// Each term of the sum is the posterior probability of being at s at time t, so it lies in [0, 1] and is summed
// in probability space (at the last frame torch assigns rather than adds the two end positions' terms, which
// differs when the last label equals blank; that is kept). Rows t >= T_n get a zero gradient; a sample with an infinite (or NaN) loss gets NaN rows
// (torch's result) unless zero_infinity, which gives it zero rows; an lp of -inf gives NaN there (as torch).

#include <atomic>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "pages.h"
#include "pool.h"

namespace {

struct Problem {
    const void* lp;
    int64_t T, N, C, st, sn, sc;  // log_probs (T, N, C) with its strides, in elements
    const int64_t* targets;       // (N, K) int64, contiguous
    int64_t K;
    const int64_t* il;            // (N,)
    const int64_t* tl;            // (N,)
    int64_t blank;
    int64_t L;                    // alpha's last dim: 2K + 1
};

// exp(x - m) for the terms of lse3: exactly 1 for the maximum itself and 0 for -inf, without calling exp
template <class S>
inline S shifted_exp(S x, S m) {
    if (x == m) return S(1);
    if (x == -std::numeric_limits<S>::infinity()) return S(0);
    return std::exp(x - m);
}

// torch's log(exp(a-m) + exp(b-m) + exp(c-m)) + m, same terms in the same order (so the same bits), calling exp
// only for the terms that are neither the maximum nor -inf
template <class S>
inline S lse3(S a, S b, S c) {
    S m = a;
    if (b > m) m = b;
    if (c > m) m = c;
    if (m == -std::numeric_limits<S>::infinity()) return m;
    if (!std::isfinite(m)) return std::log(std::exp(a - m) + std::exp(b - m) + std::exp(c - m)) + m;  // NaN, +inf
    return std::log(shifted_exp(a, m) + shifted_exp(b, m) + shifted_exp(c, m)) + m;
}

// The positions of frame t that lie on a complete path: reachable from the start (s <= 2t + 1) and able to reach
// the end by frame il - 1 (s >= Ln - 2·(il - t)). alpha and beta are -inf outside, so both passes skip them.
inline int64_t window_lo(int64_t t, int64_t il, int64_t Ln) {
    const int64_t lo = Ln - 2 * (il - t);
    return lo > 0 ? lo : 0;
}
inline int64_t window_hi(int64_t t, int64_t Ln) { return 2 * t + 2 < Ln ? 2 * t + 2 : Ln; }

// Whether sample n's lengths and labels are valid; 0 if so, else a code for the caller's message.
inline int64_t validate(const Problem& p, int64_t n) {
    const int64_t il = p.il[n], tl = p.tl[n];
    if (p.blank < 0 || p.blank >= p.C) return 3;
    if (il < 0 || il > p.T) return 1;
    if (tl < 0 || tl > p.K) return 2;
    const int64_t* y = p.targets + n * p.K;
    for (int64_t j = 0; j < tl; ++j)
        if (y[j] < 0 || y[j] >= p.C) return 3;
    return 0;
}

template <class S>
void forward_one(const Problem& p, int64_t n, S* alpha, S* nll, std::vector<int64_t>& ext) {
    const S ninf = -std::numeric_limits<S>::infinity();
    const S* lp = static_cast<const S*>(p.lp) + n * p.sn;
    const int64_t il = p.il[n], tl = p.tl[n], Ln = 2 * tl + 1;
    S* a = alpha + n * p.T * p.L;
    // alpha is fully defined (the torch-op backward, used under torch.func, reads all of it): -inf past the
    // sample's extended length and past its input length
    for (int64_t t = 0; t < il; ++t)
        for (int64_t s = Ln; s < p.L; ++s) a[t * p.L + s] = ninf;
    for (int64_t i = il * p.L; i < p.T * p.L; ++i) a[i] = ninf;
    if (il == 0) {
        nll[n] = tl == 0 ? S(0) : std::numeric_limits<S>::infinity();
        return;
    }
    ext.resize(size_t(Ln));
    const int64_t* y = p.targets + n * p.K;
    for (int64_t s = 0; s < Ln; ++s) ext[size_t(s)] = (s & 1) ? y[s / 2] : p.blank;
    for (int64_t s = 0; s < Ln; ++s) a[s] = ninf;
    if (window_lo(0, il, Ln) == 0) a[0] = lp[p.sc * p.blank];
    if (tl > 0 && window_lo(0, il, Ln) <= 1) a[1] = lp[p.sc * ext[1]];
    for (int64_t t = 1; t < il; ++t) {
        const S* prev = a + (t - 1) * p.L;
        S* cur = a + t * p.L;
        const S* lpt = lp + t * p.st;
        const int64_t lo = window_lo(t, il, Ln), hi = window_hi(t, Ln);
        for (int64_t s = 0; s < lo; ++s) cur[s] = ninf;
        for (int64_t s = hi; s < Ln; ++s) cur[s] = ninf;
        for (int64_t s = lo; s < hi; ++s) {
            const S a1 = prev[s];
            const S a2 = s > 0 ? prev[s - 1] : ninf;
            const S a3 = (s > 1 && ext[size_t(s)] != ext[size_t(s - 2)]) ? prev[s - 2] : ninf;
            cur[s] = lse3(a1, a2, a3) + lpt[p.sc * ext[size_t(s)]];
        }
    }
    const S* last = a + (il - 1) * p.L;
    const S l1 = last[Ln - 1], l2 = tl > 0 ? last[Ln - 2] : ninf;
    S m = l1 > l2 ? l1 : l2;
    if (m == ninf) m = 0;
    nll[n] = -(std::log(std::exp(l1 - m) + std::exp(l2 - m)) + m);
}

template <class S>
void backward_one(const Problem& p, int64_t n, const S* alpha, const S* nll_all, const S* grad_out, int zero_inf,
                  S* grad, std::vector<int64_t>& ext, std::vector<S>& rows) {
    const S ninf = -std::numeric_limits<S>::infinity();
    const S inf = std::numeric_limits<S>::infinity();
    const S* lp = static_cast<const S*>(p.lp) + n * p.sn;
    const int64_t il = p.il[n], tl = p.tl[n], Ln = 2 * tl + 1, C = p.C;
    const S nll = nll_all[n], g = grad_out[n];
    S* gr = grad + n * C;             // grad is (T, N, C) contiguous: row t of sample n at gr + t * N * C
    const int64_t gst = p.N * C;
    for (int64_t t = il; t < p.T; ++t)
        for (int64_t c = 0; c < C; ++c) gr[t * gst + c] = 0;
    if (il == 0) return;
    // an impossible alignment (nll = inf; torch's formula gives -inf + inf = NaN) or a NaN loss: the whole sample
    if (std::isnan(nll) || nll == inf) {
        const S v = (zero_inf && nll == inf) ? S(0) : std::numeric_limits<S>::quiet_NaN();
        for (int64_t t = 0; t < il; ++t)
            for (int64_t c = 0; c < C; ++c) gr[t * gst + c] = v;
        return;
    }
    ext.resize(size_t(Ln));
    const int64_t* y = p.targets + n * p.K;
    for (int64_t s = 0; s < Ln; ++s) ext[size_t(s)] = (s & 1) ? y[s / 2] : p.blank;
    rows.resize(size_t(2 * Ln));
    S* next = rows.data();
    S* cur = rows.data() + Ln;
    const S* a = alpha + n * p.T * p.L;
    for (int64_t t = il - 1; t >= 0; --t) {
        const S* lpt = lp + t * p.st;
        if (t == il - 1) {
            for (int64_t s = 0; s < Ln; ++s) cur[s] = ninf;
            cur[Ln - 1] = lpt[p.sc * p.blank];
            if (tl > 0) cur[Ln - 2] = lpt[p.sc * ext[size_t(Ln - 2)]];
        } else {
            const int64_t lo = window_lo(t, il, Ln), hi = window_hi(t, Ln);
            for (int64_t s = 0; s < lo; ++s) cur[s] = ninf;
            for (int64_t s = hi; s < Ln; ++s) cur[s] = ninf;
            for (int64_t s = lo; s < hi; ++s) {
                const S b1 = next[s];
                const S b2 = s + 1 < Ln ? next[s + 1] : ninf;
                const S b3 = (s + 2 < Ln && ext[size_t(s + 2)] != ext[size_t(s)]) ? next[s + 2] : ninf;
                cur[s] = lse3(b1, b2, b3) + lpt[p.sc * ext[size_t(s)]];
            }
        }
        // the collected log(Σ_{s: l'(s) = c} alpha·beta) per class, in torch's order and formula (s descending,
        // pairwise log-add with the maximum), so that the gradient is torch's bit for bit
        S* out = gr + t * gst;
        for (int64_t c = 0; c < C; ++c) out[c] = ninf;
        const S* at = a + t * p.L;
        if (t == il - 1) {
            // torch assigns (does not add) the last frame's two end positions, blank's first: a last label
            // equal to blank keeps position 2S-1's term only
            out[p.blank] = at[Ln - 1] + cur[Ln - 1];
            if (tl > 0) out[ext[size_t(Ln - 2)]] = at[Ln - 2] + cur[Ln - 2];
        } else {
            for (int64_t s = window_hi(t, Ln) - 1, lo = window_lo(t, il, Ln); s >= lo; --s) {
                const S ab = at[s] + cur[s];
                if (ab == ninf) continue;  // log-adding -inf leaves the sum as it is (bit for bit)
                S& acc = out[ext[size_t(s)]];
                if (acc == ninf) {
                    acc = ab;
                } else {
                    const S m = acc > ab ? acc : ab;
                    acc = std::log(shifted_exp(acc, m) + shifted_exp(ab, m)) + m;
                }
            }
        }
        for (int64_t c = 0; c < C; ++c) {
            const S l = lpt[p.sc * c];
            // exp(-inf + nll - l) = 0 without the call, except for l = -inf (NaN there, as torch)
            const S collected = (out[c] == ninf && l != ninf) ? S(0) : std::exp(out[c] + nll - l);
            out[c] = (std::exp(l) - collected) * g;
        }
        S* tmp = next;
        next = cur;
        cur = tmp;
    }
}

// Samples [0, N) handed out one at a time over `threads` threads of the parallel loop (pool.h; the caller's
// thread is one of them); every sample has run when this returns. Returns 0, -1 when memory ran out, or 1 +
// the first invalid sample.
template <class F>
int64_t run(int64_t N, int threads, F body) {
    std::atomic<int64_t> failed{0};
    auto one = [&](int64_t n) {
        try {
            body(n);
        } catch (...) {
            failed.store(-1);
        }
    };
    losskit_pool::run(threads, N, one);
    return failed.load();
}

template <class S>
int64_t forward(const Problem& p, void* alpha, void* nll, int threads) {
    for (int64_t n = 0; n < p.N; ++n)
        if (int64_t code = validate(p, n)) return (n << 2) | code;
    return run(p.N, threads, [&](int64_t n) {
        thread_local std::vector<int64_t> ext;
        forward_one<S>(p, n, static_cast<S*>(alpha), static_cast<S*>(nll), ext);
    });
}

template <class S>
int64_t backward(const Problem& p, const void* alpha, const void* nll, const void* grad_out, int zero_inf, void* grad,
                 int threads) {
    for (int64_t n = 0; n < p.N; ++n)
        if (int64_t code = validate(p, n)) return (n << 2) | code;
    return run(p.N, threads, [&](int64_t n) {
        thread_local std::vector<int64_t> ext;
        thread_local std::vector<S> rows;
        backward_one<S>(p, n, static_cast<const S*>(alpha), static_cast<const S*>(nll),
                        static_cast<const S*>(grad_out), zero_inf, static_cast<S*>(grad), ext, rows);
    });
}

}  // namespace

extern "C" {

int64_t losskit_kernel_version() { return 2; }  // losskit.engine.native_ctc.VERSION

// dtype: 0 float32, 1 float64. targets (N, K) int64 contiguous; alpha (N, T, 2K+1) contiguous, all written
// (-inf off the paths); nll (N,). Returns 0; -1: out of memory; otherwise
// 4·n + code for the first invalid sample n (code 1: input length outside [0, T], 2: target length outside
// [0, K], 3: a label outside [0, C)).
int64_t losskit_ctc_forward(int dtype, const void* lp, int64_t T, int64_t N, int64_t C, int64_t st, int64_t sn,
                            int64_t sc, const int64_t* targets, int64_t K, const int64_t* il, const int64_t* tl,
                            int64_t blank, void* alpha, void* nll, int threads) {
    const Problem p{lp, T, N, C, st, sn, sc, targets, K, il, tl, blank, 2 * K + 1};
    return dtype == 0 ? forward<float>(p, alpha, nll, threads) : forward<double>(p, alpha, nll, threads);
}

// grad (T, N, C) contiguous, fully written; grad_out (N,) per-sample incoming gradient. Same return codes.
int64_t losskit_ctc_backward(int dtype, const void* lp, int64_t T, int64_t N, int64_t C, int64_t st, int64_t sn,
                             int64_t sc, const int64_t* targets, int64_t K, const int64_t* il, const int64_t* tl,
                             int64_t blank, const void* alpha, const void* nll, const void* grad_out, int zero_inf,
                             void* grad, int threads) {
    const Problem p{lp, T, N, C, st, sn, sc, targets, K, il, tl, blank, 2 * K + 1};
    losskit_pages::fresh_huge_pages(grad, size_t(T) * size_t(N) * size_t(C) * (dtype == 0 ? 4 : 8));  // pages.h
    return dtype == 0 ? backward<float>(p, alpha, nll, grad_out, zero_inf, grad, threads)
                      : backward<double>(p, alpha, nll, grad_out, zero_inf, grad, threads);
}

}  // extern "C"
