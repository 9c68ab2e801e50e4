// Row-wise embedding losses of the element-wise library (included once, by pointwise.cpp): cosine embedding
// and triplet margin (p = 1 or 2), loss and every input's gradient in one call, two passes over each row (its
// sums, then its gradients). Sums in double; torch's sub-gradients: clamp's at 0 passes, a norm's at 0 is 0,
// torch.minimum's tie (swap) splits half and half.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace losskit_rows {

constexpr double COS_EPS = 9.999999960041972e-13;  // 1e-12 rounded to float32, as the Python path adds it

template <class T>
inline double get(const T* p, int64_t i) {
    T v;
    std::memcpy(&v, p + i, sizeof v);
    return double(v);
}
template <class T>
inline void put(T* p, int64_t i, double v) {
    const T t = T(v);
    std::memcpy(p + i, &t, sizeof t);
}

// cosine embedding: a = x1, b = x2, y = target (N,), same dtype
template <class T>
double cosine_rows(const T* a, const T* b, const T* y, T* ga, T* gb, int64_t n, int64_t d, double margin,
                   double gscale) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const T* ar = a + i * d;
        const T* br = b + i * d;
        double dot = 0.0, s1 = 0.0, s2 = 0.0;
        for (int64_t j = 0; j < d; ++j) {
            const double u = get(ar, j), v = get(br, j);
            dot += u * v;
            s1 += u * u;
            s2 += v * v;
        }
        const double m1 = s1 + COS_EPS, m2 = s2 + COS_EPS, denom = std::sqrt(m1 * m2), cos = dot / denom;
        const double t = get(y, i);
        double gcos = 0.0;
        if (t == 1) {
            total += 1 - cos;
            gcos = -1;
        } else if (t == -1) {
            const double z = cos - margin;
            total += z > 0 || std::isnan(z) ? z : 0.0;  // clamp_min(z, 0) keeps NaN
            gcos = z >= 0 ? 1 : 0;                       // NaN: 0, as torch's clamp sub-gradient
        }
        if (ga == nullptr && gb == nullptr) continue;
        gcos *= gscale;
        const double across = gcos / denom, own1 = -gcos * cos / m1, own2 = -gcos * cos / m2;
        for (int64_t j = 0; j < d; ++j) {
            const double u = get(ar, j), v = get(br, j);
            if (ga) put(ga + i * d, j, across * v + own1 * u);
            if (gb) put(gb + i * d, j, across * u + own2 * v);
        }
    }
    return total;
}

// ‖x - y + eps‖_p of one row (p = 1 or 2)
template <class T>
inline double distance(const T* x, const T* y, int64_t d, double eps, bool p1) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) {
        const double v = get(x, j) - get(y, j) + eps;
        s += p1 ? std::fabs(v) : v * v;
    }
    return p1 ? s : std::sqrt(s);
}

// ∂‖v‖_p/∂v_j times `scale`, v_j = x_j - y_j + eps: v_j/‖v‖ (p = 2), sign(v_j) (p = 1); 0 at a zero norm
inline double unit(double v, double norm, bool p1) {
    if (p1) return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0);
    return norm == 0 ? 0.0 : v / norm;
}

// triplet margin: a anchor, p positive, q negative
template <class T>
double triplet_rows(const T* a, const T* p, const T* q, T* ga, T* gp, T* gq, int64_t n, int64_t d, double margin,
                    double eps, bool p1, bool swap, double gscale) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
        const T* ar = a + i * d;
        const T* pr = p + i * d;
        const T* qr = q + i * d;
        const double dap = distance(ar, pr, d, eps, p1), daq = distance(ar, qr, d, eps, p1);
        double wa = 1.0, wp = 0.0, dneg = daq, dpq = 0.0;  // which negative distance counts, and its share
        if (swap) {
            dpq = distance(pr, qr, d, eps, p1);
            if (std::isnan(dpq) || std::isnan(daq)) {
                dneg = dpq + daq;  // torch.minimum propagates NaN
            } else if (dpq < daq) {
                wa = 0.0, wp = 1.0, dneg = dpq;
            } else if (dpq == daq) {
                wa = 0.5, wp = 0.5;
            }
        }
        const double z = margin + dap - dneg;
        total += z > 0 || std::isnan(z) ? z : 0.0;  // clamp_min(z, 0) keeps NaN
        if (ga == nullptr && gp == nullptr && gq == nullptr) continue;
        const double g = z >= 0 ? gscale : 0.0;
        for (int64_t j = 0; j < d; ++j) {
            const double x = get(ar, j), y = get(pr, j), w = get(qr, j);
            const double uap = unit(x - y + eps, dap, p1);
            // a zero share still multiplies (0 · NaN is NaN, as in torch's autograd)
            const double uaq = unit(x - w + eps, daq, p1) * wa;
            const double upq = swap ? unit(y - w + eps, dpq, p1) * wp : 0.0;
            if (ga) put(ga + i * d, j, g * (uap - uaq));
            if (gp) put(gp + i * d, j, g * (-uap - upq));
            if (gq) put(gq + i * d, j, g * (uaq + upq));
        }
    }
    return total;
}

}  // namespace losskit_rows

extern "C" {

// One call of cosine embedding (kind 0) or triplet margin (kind 1) on (N, D) contiguous rows of one dtype.
struct EmbCall {
    int64_t kind;
    int64_t dtype;  // 0 float32, 1 float64
    const void* a;  // x1 | anchor
    const void* b;  // x2 | positive
    const void* c;  // target (N,) | negative
    void* ga;       // gradients, or null
    void* gb;
    void* gc;       // triplet only
    void* loss;     // the reduced loss: total / ldiv, in the dtype
    int64_t n, d;
    double margin, eps;
    int64_t p1, swap;  // triplet: p = 1 (else 2), swap
    double gscale, ldiv;
};

}  // extern "C"

namespace losskit_rows {
template <class T>
void embedding(const EmbCall* e) {
    const T *a = static_cast<const T*>(e->a), *b = static_cast<const T*>(e->b), *c = static_cast<const T*>(e->c);
    T *ga = static_cast<T*>(e->ga), *gb = static_cast<T*>(e->gb), *gc = static_cast<T*>(e->gc);
    const double total = e->kind == 0 ? cosine_rows<T>(a, b, c, ga, gb, e->n, e->d, e->margin, e->gscale)
                                      : triplet_rows<T>(a, b, c, ga, gb, gc, e->n, e->d, e->margin, e->eps,
                                                        e->p1 != 0, e->swap != 0, e->gscale);
    put(static_cast<T*>(e->loss), 0, total / e->ldiv);
}
}  // namespace losskit_rows

extern "C" {

void losskit_embedding(const EmbCall* e) {
    const size_t bytes = size_t(e->n) * size_t(e->d) * (e->dtype == 0 ? 4 : 8);
    for (void* g : {e->ga, e->gb, e->gc}) losskit_pages::fresh_huge_pages(g, bytes);  // fresh gradients (pages.h)
    if (e->dtype == 0)
        losskit_rows::embedding<float>(e);
    else
        losskit_rows::embedding<double>(e);
}

}  // extern "C"
