// losskit's parallel loop, shared by the kernels' calls: `pool::run(threads, chunks, body)` runs body(0) ...
// body(chunks - 1) on the calling thread and up to `threads - 1` others, and returns when every chunk has run.
// Results never depend on which thread ran a chunk: callers keep per-chunk partial results, added in chunk order.
//
// Built with OpenMP (the default; see native_build), the chunks go to torch's own OpenMP threads: the kernel
// library needs libgomp.so.1, and the dynamic loader hands it the copy torch has already loaded, so there is
// one pool of threads in the process, not two. Each thread first takes one contiguous block of chunks (thread t
// of T: chunks [t·K/T, (t+1)·K/T)), the split torch's own parallel loops use: in a training step the model's
// output was written by those same threads in the same halves, and each reads its half from its own cache.
// A thread done early then takes the chunks still unclaimed in the other blocks.
// Measured on a 2-core VM, an MLP step ending in mse_loss 256×1000: 0.97× torch's step with OpenMP, 1.02× with
// a second pool of losskit's own (whose workers and torch's spinning OpenMP threads took turns on the cores).
//
// Without OpenMP (a compiler without it, LOSSKIT_OPENMP=0), and in a forked child (fork does not promise the
// parent's OpenMP threads to the child: torch's own parallel ops hang in one), losskit's own pool runs them.
// Why not a std::thread per call (what the kernels did): starting and joining one costs 60-80 µs on the VMs
// we measured, as much as the whole of a 256k-element loss. The workers here live as long as the process and
// wait for the next call, first spinning briefly (yielding the core to anything else runnable), then asleep.
// Chunks are handed out from one counter, so the caller never waits for a worker that is late to wake: it takes
// the chunks itself, and waits only for the chunks a worker has already claimed. Hence:
// - nothing a call handed out is still running when the call returns (no worker writes into a caller's
//   buffers afterwards), as with the threads joined at the end of every call before;
// - a forked child, where the parent's workers do not exist, starts a pool of its own (its pid is checked);
// - two calls at once (ctypes releases the GIL) never share the pool: the second runs on its own thread alone;
// - a worker that cannot be started leaves its share to the others.
// Bodies must not throw (each kernel catches inside its body and reports through its own results).
#pragma once

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#include <pthread.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define LOSSKIT_PAUSE() _mm_pause()
#else
#define LOSSKIT_PAUSE() std::this_thread::yield()
#endif

namespace losskit_pool {

// How long an idle worker keeps spinning for the next call before it sleeps (waking a sleeping thread costs
// 25-50 µs on a VM). While it spins it yields whenever the OS has something else to run on its core.
constexpr auto SPIN = std::chrono::microseconds(200);

struct State {
    pid_t pid = 0;
    std::atomic<bool> busy{false};
    std::atomic<uint32_t> epoch{0};          // the current job's number; workers wait for it to change
    std::atomic<uint64_t> ticket{0};         // (epoch << 32) | the next chunk to hand out
    std::atomic<int64_t> done{0};            // chunks of the current job finished
    std::atomic<int64_t> chunks{0};          // the current job: chunk count, body
    std::atomic<void (*)(void*, int64_t)> fn{nullptr};
    std::atomic<void*> ctx{nullptr};
    std::atomic<int> sleeping{0};
    std::mutex m;
    std::condition_variable cv;
    int workers = 0;  // started so far (by the caller that holds `busy`)

    // Take and run chunks of job `e` until none is left (or the job is no longer `e`).
    void work(uint32_t e) {
        for (;;) {
            uint64_t t = ticket.load(std::memory_order_acquire);
            if (uint32_t(t >> 32) != e || int64_t(t & 0xffffffffu) >= chunks.load(std::memory_order_relaxed)) return;
            if (!ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) continue;
            fn.load(std::memory_order_relaxed)(ctx.load(std::memory_order_relaxed), int64_t(t & 0xffffffffu));
            done.fetch_add(1, std::memory_order_release);
        }
    }

    void worker_loop(uint32_t seen) {  // seen: the epoch before the job it was started for
        for (;;) {
            const auto until = std::chrono::steady_clock::now() + SPIN;
            for (int k = 1; epoch.load() == seen; ++k) {
                LOSSKIT_PAUSE();
                if (k % 64 == 0) {
                    if (std::chrono::steady_clock::now() > until) break;
                    std::this_thread::yield();
                }
            }
            if (epoch.load() == seen) {
                std::unique_lock<std::mutex> lock(m);
                sleeping.fetch_add(1);
                cv.wait(lock, [&] { return epoch.load() != seen; });
                sleeping.fetch_sub(1);
            }
            seen = epoch.load();
            work(seen);
        }
    }
};

// This process's pool; a new one after a fork (the old one, whose workers live only in the parent, is left
// alone: never freed, never waited on).
inline State* state() {
    static std::atomic<State*> current{nullptr};
    static std::mutex create;
    State* s = current.load(std::memory_order_acquire);
    const pid_t pid = getpid();
    if (s != nullptr && s->pid == pid) return s;
    std::lock_guard<std::mutex> lock(create);
    s = current.load(std::memory_order_acquire);
    if (s != nullptr && s->pid == pid) return s;
    State* fresh = new (std::nothrow) State;
    if (fresh == nullptr) return nullptr;
    fresh->pid = pid;
    current.store(fresh, std::memory_order_release);
    return fresh;
}

template <class F>
void trampoline(void* ctx, int64_t chunk) {
    (*static_cast<F*>(ctx))(chunk);
}

#ifdef _OPENMP
// Set in a forked child: by the fork handler registered when the library is loaded, or, for a library first
// loaded in a child, by the loader (losskit_pool_forked(); see native_loader).
inline std::atomic<bool> forked{false};
inline const int registered = pthread_atfork(nullptr, nullptr, [] { forked.store(true); });
#endif

template <class F>
void run(int threads, int64_t chunks, F& body) {
    if (threads > chunks) threads = int(chunks);
    if (threads <= 1) {
        for (int64_t i = 0; i < chunks; ++i) body(i);
        return;
    }
#ifdef _OPENMP
    if (!forked.load(std::memory_order_relaxed)) {
        // block b: chunks [b·K/T, (b+1)·K/T); thread t takes the chunks of its own block first, in order, then
        // those still unclaimed in the others' (a thread the OpenMP runtime did not start, or one descheduled on
        // a shared machine, does not hold the call up)
        std::vector<std::atomic<int64_t>> next(static_cast<size_t>(threads));
        for (int b = 0; b < threads; ++b) next[size_t(b)].store(chunks * b / threads, std::memory_order_relaxed);
#pragma omp parallel num_threads(threads)
        {
            const int t = omp_get_thread_num();
            for (int k = 0; k < threads; ++k) {
                const int b = (t + k) % threads;
                const int64_t end = chunks * (b + 1) / threads;
                for (int64_t i; (i = next[size_t(b)].fetch_add(1, std::memory_order_relaxed)) < end;) body(i);
            }
        }
        return;
    }
#endif
    if (threads > 1) {
        static const int cores = int(std::thread::hardware_concurrency());  // a file read: once
        if (cores > 0 && threads > cores) threads = cores;
    }
    State* s = threads > 1 ? state() : nullptr;
    if (s == nullptr || s->busy.exchange(true, std::memory_order_acquire)) {
        for (int64_t i = 0; i < chunks; ++i) body(i);
        return;
    }
    while (s->workers < threads - 1) {
        try {
            std::thread(&State::worker_loop, s, s->epoch.load()).detach();
            ++s->workers;
        } catch (...) {
            break;  // no more threads to be had: the ones there are share the work
        }
    }
    s->chunks.store(chunks, std::memory_order_relaxed);
    s->fn.store(&trampoline<F>, std::memory_order_relaxed);
    s->ctx.store(&body, std::memory_order_relaxed);
    s->done.store(0, std::memory_order_relaxed);
    uint32_t e = s->epoch.load() + 1;
    if (e == 0) e = 1;
    s->ticket.store(uint64_t(e) << 32, std::memory_order_release);
    s->epoch.store(e);  // seq_cst, as the sleepers' count read next: a worker about to sleep sees e, or is seen
    if (s->sleeping.load() > 0) {
        { std::lock_guard<std::mutex> lock(s->m); }
        s->cv.notify_all();
    }
    s->work(e);
    while (s->done.load(std::memory_order_acquire) < chunks) LOSSKIT_PAUSE();
    s->busy.store(false, std::memory_order_release);
}

}  // namespace losskit_pool

// The library was loaded in a forked child: run the chunks on losskit's own pool, not on the parent's OpenMP
// threads (which the child does not have).
extern "C" void losskit_pool_forked() {
#ifdef _OPENMP
    losskit_pool::forked.store(true);
#endif
}

// 1: the chunks go to torch's OpenMP threads (built with OpenMP, not in a forked child); 0: losskit's own pool.
extern "C" int losskit_pool_openmp() {
#ifdef _OPENMP
    return losskit_pool::forked.load() ? 0 : 1;
#else
    return 0;
#endif
}
