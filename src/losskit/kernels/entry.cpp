// losskit's eager entry points: the whole common eager call of the small-call losses in C++, from the Python
// arguments to a loss whose autograd node is C++ too.
//
// At a classifier's batch (32×10) a loss's cost is its fixed cost. torch's NLL is one C++ op and one C++
// backward node, ~19 µs forward+backward on the reference VM; a Python autograd Function with nothing in it
// costs as much, so losskit's Python path (checks, struct packing, a ctypes call, a Python Function) cannot
// get under it. Here one Python-to-C++ call checks the arguments, calls the same kernel as the Python path (its
// function pointer, handed over by bind(), so there is one kernel and the two paths give the same bits) and
// wraps the result in a C++ autograd Function whose backward hands back the gradient the kernel wrote.
//
// Every entry returns None for anything it does not take (a subclass or non-CPU tensor, a layout, a dtype or an
// argument off the common case, a target out of range, a torch.func transform or jit.trace): the loss's Python
// path then runs and raises the clear error where there is one. The Python caller checks dynamo first (under
// torch.compile nothing here is reached). Built as a Python extension against the running torch by
// losskit.engine.entry (private cache, verified like the kernels); without it the Python path serves.
#include <ATen/Parallel.h>
#include <ATen/ops/clamp_min.h>
#include <ATen/ops/div.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/eq.h>
#include <ATen/ops/mean.h>
#include <ATen/ops/mul.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/utils/pybind.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>

#include "calls.h"

namespace py = pybind11;

extern "C" int losskit_kernel_version() { return 1; }

namespace losskit {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// the kernels' entries (pointwise.cpp, cross_entropy.cpp), bound once by the Python loader
int64_t (*k_nll)(NllCall*) = nullptr;
int64_t (*k_mm)(const MmCall*) = nullptr;
int64_t (*k_mlm)(const MlmCall*) = nullptr;
int64_t (*k_pointwise)(const PointCall*) = nullptr;
int64_t (*k_ce_small)(const SmallCall*) = nullptr;
// the Python side's gradient under create_graph=True for the losses whose second derivative is not 0:
// create_graph(name, tensors, state, grad_output) -> Tensor (never freed: it lives as long as the process)
py::object* create_graph = nullptr;
int64_t parallel_elements = int64_t(1) << 15;  // native_pointwise.PARALLEL_ELEMENTS

struct Decline {};  // a kernel found a target out of range: the entry returns None, the Python path raises

// no torch.func transform (the first one switches the dynamic-layer keys on for the thread) and no jit.trace
bool eager() {
    return !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode) &&
           !torch::jit::tracer::isTracing();
}

// a tensor without a forward-mode AD tangent (a dual tensor takes the traceable path, whose ops carry it)
bool no_tangent(const at::Tensor& t) { return !t._fw_grad(/*level=*/0).defined(); }

// an exact torch.Tensor (or Parameter) on the CPU, contiguous, no lazy negation, no tangent; else null
const at::Tensor* plain(PyObject* o) {
    if (!THPVariable_CheckExact(o)) return nullptr;
    const at::Tensor& t = THPVariable_Unpack(o);
    if (!t.defined() || !t.is_cpu() || !t.is_contiguous() || t.is_neg() || !no_tangent(t)) return nullptr;
    return &t;
}

int64_t dtype_code(const at::Tensor& t) {  // 0 fp32, 1 fp64, -1 otherwise
    const auto s = t.scalar_type();
    return s == at::kFloat ? 0 : (s == at::kDouble ? 1 : -1);
}

// a Python int (not bool) that fits int64
bool int64_of(PyObject* o, int64_t* out) {
    if (!PyLong_CheckExact(o)) return false;
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return false;
    }
    *out = v;
    return true;
}

// 'mean' -> 1, 'sum' -> 2, 'none' -> 0, else -1
int reduction_of(PyObject* o) {
    if (!PyUnicode_CheckExact(o)) return -1;
    if (PyUnicode_CompareWithASCIIString(o, "mean") == 0) return 1;
    if (PyUnicode_CompareWithASCIIString(o, "sum") == 0) return 2;
    if (PyUnicode_CompareWithASCIIString(o, "none") == 0) return 0;
    return -1;
}

// float(grad_output) of a one-element gradient, as Python reads it
double value_of(const at::Tensor& g) {
    if (g.is_cpu() && g.numel() == 1) {
        if (g.scalar_type() == at::kFloat) return double(*static_cast<const float*>(g.const_data_ptr()));
        if (g.scalar_type() == at::kDouble) return *static_cast<const double*>(g.const_data_ptr());
    }
    return g.item<double>();
}

// the gradient the forward left in the context, taken out of it (undefined after the first backward)
at::Tensor take(AutogradContext* ctx) {
    auto it = ctx->saved_data.find("g");
    if (it == ctx->saved_data.end() || !it->second.isTensor()) return at::Tensor();
    at::Tensor grad = it->second.toTensor();
    it->second = c10::IValue();
    return grad;
}

// loss.backward() the first time: grad_output 1 and no graph of the gradient asked for, so the gradient the
// forward wrote (`grad`, taken from the context) is the answer as it is
bool as_written(const at::Tensor& grad, const at::Tensor& grad_output) {
    return grad.defined() && !at::GradMode::is_enabled() && value_of(grad_output) == 1.0;
}

// the Python side's create_graph(name, tensors, state, grad_output); every Python object is made under the GIL
// (backward runs with it released), ``state`` by the caller's function
template <class State>
at::Tensor python_grad(const char* name, const variable_list& tensors, State state, const at::Tensor& grad_output) {
    py::gil_scoped_acquire gil;
    py::tuple items(tensors.size());
    for (size_t i = 0; i < tensors.size(); ++i) items[i] = py::cast(tensors[i]);
    py::object out = (*create_graph)(name, items, state(), grad_output);
    return THPVariable_Unpack(out.ptr());
}

bool wants_grad(const at::Tensor& x) { return x.requires_grad() && at::GradMode::is_enabled(); }

// An entry's answer: with_grad() (the loss and its C++ node) when x needs a gradient, else no_grad() (the kernel's
// loss alone, undefined when the kernel declines); None for a decline either way (a target out of range: the
// Python path raises the clear error).
template <class WithGrad, class NoGrad>
py::object answer(const at::Tensor& x, WithGrad with_grad, NoGrad no_grad) {
    try {
        at::Tensor out = wants_grad(x) ? with_grad() : no_grad();
        if (!out.defined()) return py::none();
        return py::reinterpret_steal<py::object>(THPVariable_Wrap(std::move(out)));
    } catch (const Decline&) {
        return py::none();
    }
}

// f(), with the GIL released for a large call (as the ctypes path releases it: other Python threads run
// meanwhile) when this thread holds it (backward runs without it); a small call keeps it (releasing costs more)
template <class F>
int64_t kernel_call(int64_t elements, F f) {
    if (elements >= parallel_elements && PyGILState_Check()) {
        py::gil_scoped_release released;
        return f();
    }
    return f();
}

// The targets (and class weights, lengths) a node reads without a gradient flowing to them: passed to
// Function::apply by pointer, so that it records one input (the scores) instead of two to four (each costs a
// VariableInfo and an edge, ~0.2 µs); still saved for backward where the Python path saves them.
struct Side {
    const at::Tensor* y;
    const at::Tensor* w = nullptr;
    const at::Tensor* z = nullptr;
};

// ------------------------------------------------------------------------------------------------ NLL

int64_t nll_run(const at::Tensor& x, const at::Tensor& y, int64_t ignore_index, bool mean, at::Tensor* grad,
                at::Tensor* loss, bool has_scale, double gscale, double* denom) {
    NllCall a{};
    a.dtype = dtype_code(x);
    a.x = x.const_data_ptr();
    a.y = static_cast<const int64_t*>(y.const_data_ptr());
    a.n = x.size(0);
    a.c = x.size(1);
    if (grad) {
        *grad = at::empty_like(x);
        a.g = grad->data_ptr();
        a.threads = x.numel() >= parallel_elements ? at::get_num_threads() : 1;
    } else {
        a.threads = 1;
    }
    *loss = at::empty({}, x.options());
    a.loss = loss->data_ptr();
    a.ignore_index = ignore_index;
    a.mean = mean;
    a.has_scale = has_scale;
    a.gscale = gscale;
    const int64_t bad = kernel_call(x.numel(), [&] { return k_nll(&a); });
    if (denom) *denom = a.denom;
    return bad;
}

struct NllLoss : torch::autograd::Function<NllLoss> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Side side, int64_t ignore_index, bool mean) {
        const at::Tensor& y = *side.y;
        at::Tensor grad, loss;
        double denom = 0.0;
        if (nll_run(x, y, ignore_index, mean, &grad, &loss, false, 0.0, &denom)) throw Decline{};
        ctx->saved_data["g"] = grad;
        ctx->saved_data["ignore_index"] = ignore_index;
        ctx->saved_data["mean"] = mean;
        ctx->saved_data["denom"] = denom;
        ctx->save_for_backward({x, y});
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        at::Tensor grad = take(ctx);
        const at::Tensor& go = grad_outputs[0];
        const bool graph = at::GradMode::is_enabled();
        if (as_written(grad, go)) return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
        const auto saved = ctx->get_saved_variables();
        const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
        const bool mean = ctx->saved_data["mean"].toBool();
        at::Tensor loss;
        if (graph) {  // create_graph=True: the gradient is linear in grad_output, constant in x
            at::Tensor unit;
            {
                at::NoGradGuard no_grad;
                nll_run(saved[0], saved[1], ignore_index, mean, &unit, &loss, false, 0.0, nullptr);
            }
            return {at::mul(unit, go), at::Tensor(), at::Tensor(), at::Tensor()};
        }
        const double g = value_of(go), denom = ctx->saved_data["denom"].toDouble();
        const double scale = !mean ? g : (denom != 0.0 ? g / denom : 0.0);  // no kept row: nothing to scale
        nll_run(saved[0], saved[1], ignore_index, mean, &grad, &loss, true, scale, nullptr);
        return {grad, at::Tensor(), at::Tensor(), at::Tensor()};
    }
};

// (N, C) fp32/fp64 scores and (N,) int64 class indices, N·C > 0
bool class_indices(const at::Tensor* x, const at::Tensor* y) {
    return x && y && dtype_code(*x) >= 0 && y->scalar_type() == at::kLong && x->dim() == 2 && y->dim() == 1 &&
           x->size(0) == y->size(0) && x->numel() > 0;
}

py::object nll(py::handle input, py::handle target, py::handle ignore_index, py::handle reduction) {
    const at::Tensor* x = plain(input.ptr());
    const at::Tensor* y = plain(target.ptr());
    const int red = reduction_of(reduction.ptr());
    int64_t ignore = 0;
    if (!k_nll || !class_indices(x, y) || red < 1 || !int64_of(ignore_index.ptr(), &ignore) || !eager())
        return py::none();
    return answer(*x, [&] { return NllLoss::apply(*x, Side{y}, ignore, red == 1); },
                  [&] {
                      at::Tensor loss;
                      return nll_run(*x, *y, ignore, red == 1, nullptr, &loss, false, 0.0, nullptr) ? at::Tensor()
                                                                                                    : loss;
                  });
}

// ------------------------------------------------------------------------------------------------ multi-class margin

int64_t mm_run(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w, int64_t p, double margin, bool mean,
               at::Tensor* grad, at::Tensor* loss, bool has_scale, double gscale) {
    MmCall a{};
    a.dtype = dtype_code(x);
    a.x = x.const_data_ptr();
    a.y = static_cast<const int64_t*>(y.const_data_ptr());
    a.w = w.defined() ? w.const_data_ptr() : nullptr;
    if (grad) {
        *grad = at::empty_like(x);
        a.g = grad->data_ptr();
    }
    *loss = at::empty({}, x.options());
    a.loss = loss->data_ptr();
    a.n = x.size(0);
    a.c = x.size(1);
    a.p = p;
    a.margin = margin;
    a.mean = mean;
    a.has_scale = has_scale;
    a.gscale = gscale;
    return kernel_call(x.numel(), [&] { return k_mm(&a); });
}

struct MultiMarginLoss : torch::autograd::Function<MultiMarginLoss> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Side side, int64_t p, double margin,
                              bool mean) {
        const at::Tensor& y = *side.y;
        const at::Tensor w = side.w ? *side.w : at::Tensor();
        at::Tensor grad, loss;
        if (mm_run(x, y, w, p, margin, mean, &grad, &loss, false, 0.0)) throw Decline{};
        ctx->saved_data["g"] = grad;
        ctx->saved_data["p"] = p;
        ctx->saved_data["margin"] = margin;
        ctx->saved_data["mean"] = mean;
        ctx->save_for_backward({x, y, w});
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        at::Tensor grad = take(ctx);
        const at::Tensor& go = grad_outputs[0];
        const at::Tensor none;
        const bool graph = at::GradMode::is_enabled();
        if (as_written(grad, go)) return {grad, none, none, none, none};
        const auto saved = ctx->get_saved_variables();
        const int64_t p = ctx->saved_data["p"].toInt();
        const double margin = ctx->saved_data["margin"].toDouble();
        const bool mean = ctx->saved_data["mean"].toBool();
        if (graph)  // create_graph=True: torch's gradient formula in differentiable ops (Python)
            return {python_grad("multi_margin", saved, [&] { return py::make_tuple(p, margin, mean); }, go),
                    none, none, none, none};
        at::Tensor loss;
        mm_run(saved[0], saved[1], saved[2], p, margin, mean, &grad, &loss, true, value_of(go));
        return {grad, none, none, none, none};
    }
};

py::object multi_margin(py::handle input, py::handle target, py::handle p_, py::handle margin_, py::handle weight,
                        py::handle reduction) {
    const at::Tensor* x = plain(input.ptr());
    const at::Tensor* y = plain(target.ptr());
    const int red = reduction_of(reduction.ptr());
    int64_t p = 0;
    if (!k_mm || !class_indices(x, y) || red < 1 || !int64_of(p_.ptr(), &p) || (p != 1 && p != 2)) return py::none();
    double margin = 0.0;
    if (PyFloat_CheckExact(margin_.ptr())) {
        margin = PyFloat_AS_DOUBLE(margin_.ptr());
    } else {
        int64_t m = 0;
        if (!int64_of(margin_.ptr(), &m)) return py::none();
        margin = double(m);
    }
    if (!std::isfinite(margin)) return py::none();
    at::Tensor w;
    if (!weight.is_none()) {
        const at::Tensor* wp = plain(weight.ptr());
        if (!wp || wp->scalar_type() != x->scalar_type() || wp->dim() != 1 || wp->size(0) != x->size(1) ||
            wp->requires_grad())
            return py::none();
        w = *wp;
    }
    if (!eager()) return py::none();
    const Side side{y, w.defined() ? &w : nullptr};
    return answer(*x, [&] { return MultiMarginLoss::apply(*x, side, p, margin, red == 1); },
                  [&] {
                      at::Tensor loss;
                      return mm_run(*x, *y, w, p, margin, red == 1, nullptr, &loss, false, 0.0) ? at::Tensor() : loss;
                  });
}

// ------------------------------------------------------------------------------------------------ multi-label margin

int64_t mlm_run(const at::Tensor& x, const at::Tensor& y, bool mean, at::Tensor* grad, at::Tensor* loss,
                bool has_scale, double gscale) {
    MlmCall a{};
    a.dtype = dtype_code(x);
    a.x = x.const_data_ptr();
    a.y = static_cast<const int64_t*>(y.const_data_ptr());
    if (grad) {
        *grad = at::empty_like(x);
        a.g = grad->data_ptr();
    }
    *loss = at::empty({}, x.options());
    a.loss = loss->data_ptr();
    a.n = x.size(0);
    a.c = x.size(1);
    a.mean = mean;
    a.has_scale = has_scale;
    a.gscale = gscale;
    return kernel_call(x.numel(), [&] { return k_mlm(&a); });
}

struct MultilabelMarginLoss : torch::autograd::Function<MultilabelMarginLoss> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Side side, bool mean) {
        const at::Tensor& y = *side.y;
        at::Tensor grad, loss;
        if (mlm_run(x, y, mean, &grad, &loss, false, 0.0)) throw Decline{};
        ctx->saved_data["g"] = grad;
        ctx->saved_data["mean"] = mean;
        ctx->save_for_backward({x, y});
        return loss;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        at::Tensor grad = take(ctx);
        const at::Tensor& go = grad_outputs[0];
        const bool graph = at::GradMode::is_enabled();
        if (as_written(grad, go)) return {grad, at::Tensor(), at::Tensor()};
        const auto saved = ctx->get_saved_variables();
        const bool mean = ctx->saved_data["mean"].toBool();
        at::Tensor loss;
        if (graph) {  // create_graph=True: piecewise linear, the gradient is constant in x
            at::Tensor unit;
            {
                at::NoGradGuard no_grad;
                mlm_run(saved[0], saved[1], mean, &unit, &loss, false, 0.0);
            }
            return {at::mul(unit, go), at::Tensor(), at::Tensor()};
        }
        mlm_run(saved[0], saved[1], mean, &grad, &loss, true, value_of(go));
        return {grad, at::Tensor(), at::Tensor()};
    }
};

py::object multilabel_margin(py::handle input, py::handle target, py::handle reduction) {
    const at::Tensor* x = plain(input.ptr());
    const at::Tensor* y = plain(target.ptr());
    const int red = reduction_of(reduction.ptr());
    if (!k_mlm || !x || !y || dtype_code(*x) < 0 || y->scalar_type() != at::kLong || x->dim() != 2 ||
        x->sizes() != y->sizes() || x->numel() == 0 || red < 1 || !eager())
        return py::none();
    return answer(*x, [&] { return MultilabelMarginLoss::apply(*x, Side{y}, red == 1); },
                  [&] {
                      at::Tensor loss;
                      return mlm_run(*x, *y, red == 1, nullptr, &loss, false, 0.0) ? at::Tensor() : loss;
                  });
}

// ------------------------------------------------------------------------------------------------ element-wise

// reduction: 0 'none', 1 'mean', 2 'sum'; divisor > 0: 'sum' divided by it (kl_div's 'batchmean'), else none
int64_t point_run(int64_t kind, double p, const at::Tensor& x, const at::Tensor& t, int reduction, double divisor,
                  at::Tensor* grad, at::Tensor* out, bool has_scale, double gscale) {
    PointCall a{};
    const int64_t n = x.numel();
    const double div = reduction == 1 ? double(n) : (divisor > 0 ? divisor : 1.0);
    a.kind = kind;
    a.dtype = dtype_code(x);
    a.x = x.const_data_ptr();
    a.t = t.const_data_ptr();
    if (grad) {
        *grad = at::empty_like(x);
        a.g = grad->data_ptr();
    }
    if (reduction == 0) {
        *out = at::empty_like(x);
        a.out = out->data_ptr();
    } else {
        *out = at::empty({}, x.options());
        a.loss = out->data_ptr();
    }
    a.n = n;
    a.p = p;
    a.gscale = has_scale ? gscale : 1.0 / div;
    a.ldiv = div;
    a.threads = n >= parallel_elements ? at::get_num_threads() : 1;
    return kernel_call(n, [&] { return k_pointwise(&a); });
}

struct PointwiseLoss : torch::autograd::Function<PointwiseLoss> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Side side, int64_t kind, double p,
                              int64_t reduction, double divisor, int64_t state) {
        const at::Tensor& t = *side.y;
        at::Tensor grad, out;
        if (point_run(kind, p, x, t, int(reduction), divisor, &grad, &out, false, 0.0)) throw Decline{};
        ctx->saved_data["g"] = grad;
        ctx->saved_data["kind"] = kind;
        ctx->saved_data["p"] = p;
        ctx->saved_data["reduction"] = reduction;
        ctx->saved_data["divisor"] = divisor;
        ctx->saved_data["state"] = state;
        ctx->save_for_backward({x, t});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const at::Tensor& go = grad_outputs[0];
        const at::Tensor none;
        const int reduction = int(ctx->saved_data["reduction"].toInt());
        at::Tensor grad = take(ctx), out;
        if (reduction != 0 && as_written(grad, go)) return {grad, none, none, none, none, none, none};
        const auto saved = ctx->get_saved_variables();
        if (at::GradMode::is_enabled())  // create_graph=True: the loss's differentiable formula (Python)
            return {python_grad("pointwise", saved, [&] { return py::int_(ctx->saved_data["state"].toInt()); }, go),
                    none, none, none, none, none, none};
        const int64_t kind = ctx->saved_data["kind"].toInt();
        const double p = ctx->saved_data["p"].toDouble(), divisor = ctx->saved_data["divisor"].toDouble();
        if (!grad.defined())  // a second backward through this graph (retain_graph=True): compute it again
            point_run(kind, p, saved[0], saved[1], reduction, divisor, &grad, &out, false, 0.0);
        if (reduction == 0) {
            grad.mul_(go);
        } else if (value_of(go) != 1.0) {
            if (reduction == 2 && !(divisor > 0)) {  // 'sum': ∂l/∂x · grad_output, as torch
                grad.mul_(go);
            } else {  // ∂l/∂x · (grad_output / divisor), in grad_output's dtype: the order torch's mean takes
                const double div = reduction == 1 ? double(saved[0].numel()) : divisor;
                const double scale = value_of(at::div(go, at::Scalar(div)));
                point_run(kind, p, saved[0], saved[1], reduction, divisor, &grad, &out, true, scale);
            }
        }
        return {grad, none, none, none, none, none, none};
    }
};

// x, t: same shape and dtype (fp32/fp64), t needing no gradient; reduction as the Python string
py::object pointwise(int64_t kind, double p, py::handle input, py::handle target, py::handle reduction,
                     double divisor, int64_t state) {
    const at::Tensor* x = plain(input.ptr());
    const at::Tensor* t = plain(target.ptr());
    const int red = reduction_of(reduction.ptr());
    if (!k_pointwise || !x || !t || dtype_code(*x) < 0 || t->scalar_type() != x->scalar_type() || t->requires_grad() ||
        x->sizes() != t->sizes() || x->numel() == 0 || red < 0 || !eager())
        return py::none();
    return answer(*x, [&] { return PointwiseLoss::apply(*x, Side{t}, kind, p, red, divisor, state); },
                  [&] {
                      at::Tensor out;
                      return point_run(kind, p, *x, *t, red, divisor, nullptr, &out, false, 0.0) ? at::Tensor() : out;
                  });
}

// ------------------------------------------------------------------------------------------------ cross entropy

// (n, c) contiguous fp32 logits, (n,) int64 class indices, no class weights; reduction 0 'none', 1 'mean', 2 'sum'
int64_t ce_run(const at::Tensor& x, const at::Tensor& y, int64_t ignore_index, int reduction, double eps, double z,
               at::Tensor* grad, at::Tensor* out) {
    SmallCall a{};
    const int64_t n = x.size(0), c = x.size(1);
    a.dtype = 0;
    a.x = x.const_data_ptr();
    a.ldx = c;
    if (grad) {
        *grad = at::empty_like(x);
        a.g = grad->data_ptr();
    }
    a.ldg = c;
    a.n = n;
    a.c = c;
    a.y = static_cast<const int64_t*>(y.const_data_ptr());
    a.ignore_index = ignore_index;
    a.eps = eps;
    a.z = z;
    a.reduction = reduction;
    if (reduction == 0) {
        *out = at::empty({n}, x.options());
        a.rows = static_cast<float*>(out->data_ptr());
    } else {
        *out = at::empty({}, x.options());
        a.loss = static_cast<float*>(out->data_ptr());
    }
    return k_ce_small(&a);
}

struct CrossEntropyLoss : torch::autograd::Function<CrossEntropyLoss> {
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Side side, int64_t ignore_index,
                              int64_t reduction, double eps, double z) {
        const at::Tensor& y = *side.y;
        at::Tensor grad, out;
        if (ce_run(x, y, ignore_index, int(reduction), eps, z, &grad, &out)) throw Decline{};
        ctx->saved_data["g"] = grad;
        ctx->saved_data["ignore_index"] = ignore_index;
        ctx->saved_data["reduction"] = reduction;
        ctx->saved_data["eps"] = eps;
        ctx->saved_data["z"] = z;
        ctx->save_for_backward({x, y});
        return out;
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        at::Tensor grad = take(ctx);
        const at::Tensor& go = grad_outputs[0];
        const at::Tensor none;
        const int64_t reduction = ctx->saved_data["reduction"].toInt();
        if (reduction != 0 && as_written(grad, go))
            return {grad, none, none, none, none, none};  // the common case: loss.backward(), first time
        const auto saved = ctx->get_saved_variables();
        const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
        const double eps = ctx->saved_data["eps"].toDouble(), z = ctx->saved_data["z"].toDouble();
        if (at::GradMode::is_enabled())  // create_graph=True: the gradient behind a "not twice" node (Python)
            return {python_grad("cross_entropy", saved,
                                [&] { return py::make_tuple(ignore_index, reduction, eps, z); }, go),
                    none, none, none, none, none};
        if (!grad.defined()) {  // a second backward through this graph (retain_graph=True): compute it again
            at::Tensor out;
            ce_run(saved[0], saved[1], ignore_index, int(reduction), eps, z, &grad, &out);
        }
        if (reduction == 0)
            grad.mul_(go.reshape({-1, 1}).to(grad.scalar_type()));
        else if (value_of(go) != 1.0)
            grad.mul_(go.to(grad.scalar_type()));
        return {grad, none, none, none, none, none};
    }
};

// a Python float or int (not bool) in [lo, hi] (hi inclusive when closed)
bool number_in(PyObject* o, double lo, double hi, bool closed, double* out) {
    double v = 0.0;
    if (PyFloat_CheckExact(o)) {
        v = PyFloat_AS_DOUBLE(o);
    } else {
        int64_t i = 0;
        if (!int64_of(o, &i)) return false;
        v = double(i);
    }
    if (!(v >= lo && (closed ? v <= hi : v < hi))) return false;
    *out = v;
    return true;
}

int64_t max_elements = int64_t(1) << 16;  // small.MAX_ELEMENTS

py::object cross_entropy(py::handle input, py::handle target, py::handle ignore_index, py::handle reduction,
                         py::handle label_smoothing, py::handle z_loss) {
    const at::Tensor* x = plain(input.ptr());
    const at::Tensor* y = plain(target.ptr());
    const int red = reduction_of(reduction.ptr());
    int64_t ignore = 0;
    double eps = 0.0, z = 0.0;
    if (!k_ce_small || !x || !y || x->scalar_type() != at::kFloat || y->scalar_type() != at::kLong || x->dim() != 2 ||
        y->dim() != 1 || x->numel() == 0 || x->numel() > max_elements || x->size(0) != y->size(0) || red < 0 ||
        !int64_of(ignore_index.ptr(), &ignore) || !number_in(label_smoothing.ptr(), 0.0, 1.0, true, &eps) ||
        !number_in(z_loss.ptr(), 0.0, std::numeric_limits<double>::infinity(), false, &z) || !eager())
        return py::none();
    return answer(*x, [&] { return CrossEntropyLoss::apply(*x, Side{y}, ignore, int64_t(red), eps, z); },
                  [&] {
                      at::Tensor out;
                      return ce_run(*x, *y, ignore, red, eps, z, nullptr, &out) ? at::Tensor() : out;
                  });
}

void bind_cross_entropy(int64_t ce_small_fn, int64_t most) {
    k_ce_small = reinterpret_cast<int64_t (*)(const SmallCall*)>(ce_small_fn);
    max_elements = most;
}

// ------------------------------------------------------------------------------------------------ CTC

using CtcForward = int64_t (*)(int, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, const int64_t*,
                               int64_t, const int64_t*, const int64_t*, int64_t, void*, void*, int);
using CtcBackward = int64_t (*)(int, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                const int64_t*, int64_t, const int64_t*, const int64_t*, int64_t, const void*,
                                const void*, const void*, int, void*, int);
CtcForward k_ctc_forward = nullptr;
CtcBackward k_ctc_backward = nullptr;
int64_t ctc_parallel_cells = int64_t(1) << 10;  // native_ctc.PARALLEL_CELLS

int ctc_threads(int64_t t, int64_t n, int64_t k) {
    if (t * n * (2 * k + 1) < ctc_parallel_cells) return 1;
    return int(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n)));
}

// torch's reduction of the per-sample losses, in its ops and order (native_ctc._reduce)
at::Tensor ctc_reduce(const at::Tensor& nll, const at::Tensor& lengths, int64_t reduction, bool zero_infinity) {
    at::Tensor out = nll;
    if (zero_infinity)
        out = at::where(at::eq(nll, INFINITY), at::zeros({}, nll.options()), nll);
    if (reduction == 1) return at::mean(at::div(out, lengths));
    return reduction == 2 ? at::sum(out) : out;
}

// the forward kernel: alpha (N, T, 2K+1) and the per-sample losses (N,); 0, or the kernel's error code
int64_t ctc_forward(const at::Tensor& lp, const at::Tensor& y, const at::Tensor& il, const at::Tensor& tl,
                    int64_t blank, at::Tensor* alpha, at::Tensor* nll) {
    const int64_t t = lp.size(0), n = lp.size(1), c = lp.size(2), k = y.size(1);
    *alpha = at::empty({n, t, 2 * k + 1}, lp.options());
    *nll = at::empty({n}, lp.options());
    return kernel_call(t * n * (2 * k + 1), [&] {
        return k_ctc_forward(int(dtype_code(lp)), lp.const_data_ptr(), t, n, c, lp.stride(0), lp.stride(1),
                             lp.stride(2), static_cast<const int64_t*>(y.const_data_ptr()), k,
                             static_cast<const int64_t*>(il.const_data_ptr()),
                             static_cast<const int64_t*>(tl.const_data_ptr()), blank, alpha->data_ptr(),
                             nll->data_ptr(), ctc_threads(t, n, k));
    });
}

// the forward kernel's alpha and per-sample losses, and for 'mean' (reduction 1) the target lengths as divisors;
// throws Decline when the kernel refuses
void ctc_run(const at::Tensor& lp, const at::Tensor& y, const at::Tensor& il, const at::Tensor& tl, int64_t blank,
             int64_t reduction, at::Tensor* alpha, at::Tensor* nll, at::Tensor* lengths) {
    if (ctc_forward(lp, y, il, tl, blank, alpha, nll)) throw Decline{};
    if (reduction == 1) *lengths = at::clamp_min(tl.to(lp.scalar_type()), 1);
}

struct CtcLoss : torch::autograd::Function<CtcLoss> {
    // y, il, tl: int64 contiguous. The forward kernel runs here, so that the per-sample losses are this node's
    // output ('none' returns them as they are): saved as an output, an in-place change of the loss before
    // backward raises, as torch's. The targets, lengths and alpha are kept as plain state (as the Python path
    // keeps them), so both paths save the same tensors (what a non-reentrant checkpoint compares).
    static at::Tensor forward(AutogradContext* ctx, const at::Tensor& lp, Side side, int64_t blank, int64_t reduction,
                              bool zero_infinity) {
        const at::Tensor &y = *side.y, &il = *side.w, &tl = *side.z;  // targets, input and target lengths
        at::Tensor alpha, nll, lengths;
        ctc_run(lp, y, il, tl, blank, reduction, &alpha, &nll, &lengths);
        ctx->save_for_backward({lp, nll});
        ctx->saved_data["y"] = y;
        ctx->saved_data["il"] = il;
        ctx->saved_data["tl"] = tl;
        ctx->saved_data["alpha"] = alpha;
        ctx->saved_data["lengths"] = lengths;
        ctx->saved_data["blank"] = blank;
        ctx->saved_data["reduction"] = reduction;
        ctx->saved_data["zero_infinity"] = zero_infinity;
        return ctc_reduce(nll, lengths, reduction, zero_infinity);
    }

    static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
        const auto saved = ctx->get_saved_variables();
        const at::Tensor &lp = saved[0], &nll = saved[1];
        const at::Tensor y = ctx->saved_data["y"].toTensor(), il = ctx->saved_data["il"].toTensor();
        const at::Tensor tl = ctx->saved_data["tl"].toTensor(), alpha = ctx->saved_data["alpha"].toTensor();
        const c10::IValue& divisors = ctx->saved_data["lengths"];
        const at::Tensor lengths = divisors.isTensor() ? divisors.toTensor() : at::Tensor();
        const int64_t blank = ctx->saved_data["blank"].toInt(), reduction = ctx->saved_data["reduction"].toInt();
        const bool zero_infinity = ctx->saved_data["zero_infinity"].toBool();
        const int64_t t = lp.size(0), n = lp.size(1), c = lp.size(2), k = y.size(1);
        at::Tensor grad;
        {
            at::NoGradGuard no_grad;
            const at::Tensor go = grad_outputs[0].to(nll.scalar_type());
            // 'mean': MeanBackward then DivBackward, as torch's autograd computes them
            at::Tensor per = reduction == 0 ? go
                             : reduction == 1 ? at::div(at::div(go, at::Scalar(n)).expand({n}), lengths)
                                              : go.expand({n});
            if (zero_infinity) per = at::where(at::eq(nll, INFINITY), at::zeros({}, nll.options()), per);
            per = per.contiguous();
            grad = at::empty(lp.sizes(), lp.options());
            const int64_t code = kernel_call(t * n * (2 * k + 1), [&] {
                return k_ctc_backward(int(dtype_code(lp)), lp.const_data_ptr(), t, n, c, lp.stride(0), lp.stride(1),
                                      lp.stride(2), static_cast<const int64_t*>(y.const_data_ptr()), k,
                                      static_cast<const int64_t*>(il.const_data_ptr()),
                                      static_cast<const int64_t*>(tl.const_data_ptr()), blank, alpha.const_data_ptr(),
                                      nll.const_data_ptr(), per.const_data_ptr(), int(zero_infinity), grad.data_ptr(),
                                      ctc_threads(t, n, k));
            });
            TORCH_CHECK(code == 0, "ctc_loss(): the CTC kernel's backward could not get its memory");
        }
        const at::Tensor none;
        if (at::GradMode::is_enabled())  // create_graph=True: differentiating it again is an error, as torch's
            grad = python_grad("ctc", {grad}, [] { return py::none(); }, grad_outputs[0]);
        return {grad, none, none, none, none};
    }
};

// the (N,)-shaped lengths or the (N, S) padded targets as int64 contiguous (a copy unless they are already)
at::Tensor as_int64(const at::Tensor& t) {
    return t.scalar_type() == at::kLong && t.is_contiguous() ? t : t.to(at::kLong).contiguous();
}

// an exact tensor on the CPU of int32/int64 (any layout)
const at::Tensor* cpu_index(PyObject* o) {
    if (!THPVariable_CheckExact(o)) return nullptr;
    const at::Tensor& t = THPVariable_Unpack(o);
    if (!t.defined() || !t.is_cpu() || (t.scalar_type() != at::kLong && t.scalar_type() != at::kInt)) return nullptr;
    return &t;
}

py::object ctc(py::handle log_probs, py::handle targets, py::handle input_lengths, py::handle target_lengths,
               py::handle blank_, py::handle reduction, py::handle zero_infinity_) {
    if (!k_ctc_forward || !THPVariable_CheckExact(log_probs.ptr())) return py::none();
    const at::Tensor& lp = THPVariable_Unpack(log_probs.ptr());  // any strides: the kernel takes them
    const at::Tensor* tg = cpu_index(targets.ptr());
    const at::Tensor* ilp = cpu_index(input_lengths.ptr());
    const at::Tensor* tlp = cpu_index(target_lengths.ptr());
    const int red = reduction_of(reduction.ptr());
    int64_t blank = 0;
    if (!lp.defined() || dtype_code(lp) < 0 || lp.dim() != 3 || !lp.is_cpu() || lp.is_neg() || lp.is_conj() ||
        !no_tangent(lp) || lp.size(1) == 0 || !tg || tg->dim() != 2 || tg->size(0) != lp.size(1) || !ilp || !tlp ||
        ilp->dim() != 1 || ilp->size(0) != lp.size(1) || tlp->sizes() != ilp->sizes() ||
        !int64_of(blank_.ptr(), &blank) || red < 0 || !PyBool_Check(zero_infinity_.ptr()) || !eager())
        return py::none();
    const bool zero_infinity = zero_infinity_.ptr() == Py_True;
    const at::Tensor y = as_int64(*tg), il = as_int64(*ilp), tl = as_int64(*tlp);
    // an invalid length or label (the Python path says which), or no memory: Decline
    return answer(lp, [&] { return CtcLoss::apply(lp, Side{&y, &il, &tl}, blank, int64_t(red), zero_infinity); },
                  [&] {
                      at::Tensor alpha, nll, lengths;
                      ctc_run(lp, y, il, tl, blank, red, &alpha, &nll, &lengths);
                      return ctc_reduce(nll, lengths, red, zero_infinity);
                  });
}

void bind_ctc(int64_t forward_fn, int64_t backward_fn, int64_t cells) {
    k_ctc_forward = reinterpret_cast<CtcForward>(forward_fn);
    k_ctc_backward = reinterpret_cast<CtcBackward>(backward_fn);
    ctc_parallel_cells = cells;
}

void bind_pointwise(int64_t nll_fn, int64_t mm_fn, int64_t mlm_fn, int64_t pointwise_fn, int64_t parallel) {
    k_nll = reinterpret_cast<int64_t (*)(NllCall*)>(nll_fn);
    k_mm = reinterpret_cast<int64_t (*)(const MmCall*)>(mm_fn);
    k_mlm = reinterpret_cast<int64_t (*)(const MlmCall*)>(mlm_fn);
    k_pointwise = reinterpret_cast<int64_t (*)(const PointCall*)>(pointwise_fn);
    parallel_elements = parallel;
}

void set_create_graph(py::object fn) { create_graph = new py::object(std::move(fn)); }

}  // namespace losskit

PYBIND11_MODULE(losskit_entry, m) {
    m.def("bind_pointwise", &losskit::bind_pointwise);
    m.def("set_create_graph", &losskit::set_create_graph);
    m.def("nll", &losskit::nll);
    m.def("multi_margin", &losskit::multi_margin);
    m.def("multilabel_margin", &losskit::multilabel_margin);
    m.def("pointwise", &losskit::pointwise);
    m.def("cross_entropy", &losskit::cross_entropy);
    m.def("bind_cross_entropy", &losskit::bind_cross_entropy);
    m.def("ctc", &losskit::ctc);
    m.def("bind_ctc", &losskit::bind_ctc);
}
