// The argument structs of losskit's kernel calls: one struct per call, filled by the caller in place. Shared by
// the kernels (pointwise.cpp, cross_entropy.cpp), which define what each call computes, and by the eager entry
// points (entry.cpp), which fill them from C++; the Python callers mirror them field for field in ctypes
// Structures (engine/native_targets.py, native_pointwise.py, small.py). Plain C layout, 8-byte fields only.
#pragma once

#include <cstdint>

struct NllCall {
    int64_t dtype;  // 0 float, 1 double (x, w, g and the loss)
    const void* x;
    const int64_t* y;
    const void* w;  // (c,) class weights or null
    void* g;        // (n, c) gradient, or null
    int64_t threads; // for the gradient: rows zeroed and written in chunks over the parallel loop
    void* loss;     // the reduced loss
    int64_t n, c, ignore_index;
    int64_t mean;       // 1: divide by Σ w_y
    int64_t has_scale;  // 1: gscale is the caller's; 0: the reduction's own
    double gscale;
    double denom;      // out: Σ w_y
};

struct MlmCall {
    int64_t dtype;  // 0 float, 1 double
    const void* x;
    const int64_t* y;
    void* g;
    void* loss;
    int64_t n, c;
    int64_t mean;
    int64_t has_scale;
    double gscale;
};

struct MmCall {
    int64_t dtype;  // 0 float, 1 double
    const void* x;
    const int64_t* y;
    const void* w;  // (c,) class weights or null
    void* g;
    void* loss;
    int64_t n, c, p;
    double margin;
    int64_t mean;
    int64_t has_scale;
    double gscale;
};

struct PointCall {
    int64_t kind;
    int64_t dtype;  // 0 float, 1 double
    const void* x;
    const void* t;
    void* g;       // the gradient of the reduced loss (times gscale), or null
    void* out;     // the element-wise losses ('none'), or null
    void* loss;    // the reduced loss: total / ldiv, in the dtype; or null
    int64_t n;
    double p;      // the kind's parameter
    double gscale;
    double ldiv;
    int64_t threads;
};

struct SmallCall {
    int64_t dtype;  // 0 fp32, 1 bf16 (x and g)
    const void* x;
    int64_t ldx;
    void* g;
    int64_t ldg;
    int64_t n, c;
    const int64_t* y;
    int64_t ignore_index;
    const float* w;  // fp32 class weights or null
    double eps, z;
    int64_t reduction;
    float* rows;
    float* loss;
};
