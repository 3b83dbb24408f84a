// seqjax native CPU kernels: the forward and backward passes of one LSTM or GRU layer over a whole sequence, and
// its closed loop with a dense head, each as an XLA FFI custom call.
//
// XLA:CPU runs a loop body's operations one after another on one core, ~0.5 us each, and a step's small
// matmul there does not use the second core; these kernels run every step of the recurrence in one call and
// split it over the machine's cores. Where the batch has enough rows a thread takes the next chunk of rows and
// runs it through every step alone (batch rows never meet), computing all four gates of each group of 16 units
// (a [6, F + H] x [F + H, 4 * 16] register-blocked matmul), the cell update and the outputs. With few rows (and
// in a backward pass whose weights would not stay in a core's L2 cache) a thread owns groups of units instead
// and waits at a barrier every step for the other threads' part of `h`. Same maths as
// `sj.lstm`'s step: z = x w_x + h w_h + b, c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'),
// float32, with XLA:CPU's own rational approximation of tanh (sigmoid(x) = tanh(x / 2) / 2 + 1 / 2).
//
// Training: `seqjax_lstm_forward_train` also keeps every step's c (and with `keep_gates` its activated
// gates); `seqjax_lstm_backward` walks the steps from the last, reading each step's gates or recomputing them
// from the kept outputs, and adds the weight gradients into each thread's own columns (by units; one barrier
// per step, before the gradient reaching h_{t-1}, which needs every unit's gate gradients) or own buffer (by
// rows).
//
// Heads (both in `Forward`): `seqjax_lstm_forward_head` runs an affine head (a `chain`'s dense) on each step's
// h inside the call and writes only its outputs; `seqjax_lstm_closed_loop` feeds the head's output back as the
// next input (`sj.rollout`), its projection folded into the recurrent weights after the first step. Training
// with the head inside: `seqjax_lstm_forward_train_head` also keeps every step's h, and
// `seqjax_lstm_backward_head` takes the gradient of the head's outputs instead of the layer's (`Backward`).
// `seqjax_stack_closed_loop` runs the closed loop of a stack of LSTM and GRU layers and the head (`Stack`).
// With `strassen` the LSTM's evaluation and closed-loop kernels form each step's h w_h by one level of Strassen's
// product where the sizes allow (`strassen_rows`): 12.5% fewer multiply-adds, in another order of roundings.
//
// GRU (`reset_after`): the same kernels with `gru_rows` for the cell's rows and no c. Its weights are packed in
// four blocks [n_x, z, r, n_h] per group of units: x's rows feed the first three, h's rows the last three
// (n = tanh(n_x + r n_h) needs them apart), and the products skip the zero block of each.
//
// Built on first use by `seqjax.fast.native` with the machine's C++ compiler (-O3 -march=native); the vector
// code uses GCC/Clang vector extensions. Its unit is a 16-float vector `vf`: one register on AVX-512; where the
// registers are narrower (AVX2: 8 floats, NEON: 4) `vf` is a struct of native vectors, and the matmul tiles
// (`gemm_acc`) take one 16-float column at a time so that their accumulators fit the register file. (A
// 16-lane vector type on AVX2 made the compiler keep every value in memory: the kernels ran 8-12x slower than
// the AVX-512 build, and 5-9x slower than XLA's own loops.)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__linux__)
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;       // a float32 argument
using Out = ffi::ResultBuffer<ffi::F32>;  // a float32 result

namespace {

// The registers the build targets: a native vector's bytes and how many vector registers there are.
#if defined(__AVX512F__)
#define SEQJAX_VECTOR_BYTES 64
#define SEQJAX_VECTOR_REGISTERS 32
#elif defined(__AVX__)
#define SEQJAX_VECTOR_BYTES 32
#define SEQJAX_VECTOR_REGISTERS 16
#elif defined(__aarch64__)
#define SEQJAX_VECTOR_BYTES 16
#define SEQJAX_VECTOR_REGISTERS 32
#else
#define SEQJAX_VECTOR_BYTES 16
#define SEQJAX_VECTOR_REGISTERS 16
#endif

// Before a loop over a small array of vectors (a tile's rows or columns): unrolled in full. GCC 12 replaces such an
// array by registers only where every index is a constant when its scalar replacement pass runs, which is before
// it fully unrolls the loops it was not told to; otherwise the array stays in memory, and GCC copies it into
// registers around each product loop and back out after it (24 loads or stores at each end of a 6-row tile).
// Unrolled here, the kernels alone ran 3-23% faster (`python -m benchmarks.kernel_builds`). Clang unrolls them
// itself.
#if defined(__clang__)
#define SEQJAX_UNROLL_ALL
#else
#define SEQJAX_UNROLL_ALL _Pragma("GCC unroll 32")
#endif

constexpr int L = 16;        // lanes of a `vf`
constexpr int U = 16;        // units per group
constexpr int GW = 4 * U;    // packed columns per group
constexpr int64_t kWeightSteps = 8;  // steps of a chunk whose weight gradients the backward pass adds at once

// x clamped to [-c, c] lane by lane (x where it is NaN): on x86 as maxps(-c, minps(c, x)), which return their
// second operand where the lanes are unordered. GCC compiles the conditional expressions to a compare into a
// mask register and a masked move, two dependent operations where clang emits one (the bench's many LSTM
// rollout built with GCC 12: 249-260 ms with these, 255-264 without; clang 14's build of either, 230-238).
template <class V>
inline V clamp_lanes(V x, V c) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64) return (V)_mm512_max_ps((__m512)-c, _mm512_min_ps((__m512)c, (__m512)x));
#endif
#if defined(__AVX__)
  if constexpr (sizeof(V) == 32) return (V)_mm256_max_ps((__m256)-c, _mm256_min_ps((__m256)c, (__m256)x));
#endif
#if defined(__SSE__)
  if constexpr (sizeof(V) == 16) return (V)_mm_max_ps((__m128)-c, _mm_min_ps((__m128)c, (__m128)x));
#endif
  x = x > c ? c : x;
  return x < -c ? -c : x;
}

// Eigen's / XLA:CPU's rational approximation of tanh (float32), on any vector type.
template <class V>
inline V tanh_lanes(V x) {
  x = clamp_lanes(x, 7.90531110763549805f - V{});
  V x2 = x * x;
  V p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = x * p;
  V q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  return p / q;
}

#if SEQJAX_VECTOR_BYTES == 64
typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4)));

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf splat(float x) { return x - vf{}; }  // x - 0 folds to a broadcast
inline vf vtanh(vf x) { return tanh_lanes(x); }
#else
typedef float vn __attribute__((vector_size(SEQJAX_VECTOR_BYTES)));
typedef float vnu __attribute__((vector_size(SEQJAX_VECTOR_BYTES), aligned(4)));
constexpr int kNativeLanes = SEQJAX_VECTOR_BYTES / 4;
constexpr int kParts = L / kNativeLanes;  // native vectors in a vf
// rows of a register block in `gemm_acc`: kParts accumulators a row, kParts weight vectors and a broadcast
constexpr int kBlockRows = std::max(1, (SEQJAX_VECTOR_REGISTERS - kParts - 1) / kParts);

struct vf {  // 16 lanes as kParts native vectors, element-wise arithmetic as on a vector type
  vn p[kParts];
};
#define SEQJAX_VF_OPERATOR(op)                                                     \
  inline vf operator op(vf a, vf b) {                                              \
    for (int s = 0; s < kParts; ++s) a.p[s] = a.p[s] op b.p[s];                    \
    return a;                                                                      \
  }                                                                                \
  inline vf operator op(vf a, float b) {                                           \
    for (int s = 0; s < kParts; ++s) a.p[s] = a.p[s] op b;                         \
    return a;                                                                      \
  }                                                                                \
  inline vf operator op(float a, vf b) {                                           \
    for (int s = 0; s < kParts; ++s) b.p[s] = a op b.p[s];                         \
    return b;                                                                      \
  }                                                                                \
  inline vf& operator op##=(vf& a, vf b) { return a = a op b; }
SEQJAX_VF_OPERATOR(+)
SEQJAX_VF_OPERATOR(-)
SEQJAX_VF_OPERATOR(*)
SEQJAX_VF_OPERATOR(/)
#undef SEQJAX_VF_OPERATOR

inline vf load(const float* p) {
  vf v;
  for (int s = 0; s < kParts; ++s) v.p[s] = *reinterpret_cast<const vnu*>(p + s * kNativeLanes);
  return v;
}
inline void store(float* p, vf v) {
  for (int s = 0; s < kParts; ++s) *reinterpret_cast<vnu*>(p + s * kNativeLanes) = v.p[s];
}
inline vf splat(float x) {
  vf v;
  for (int s = 0; s < kParts; ++s) v.p[s] = x - vn{};
  return v;
}
inline vf vtanh(vf x) {
  for (int s = 0; s < kParts; ++s) x.p[s] = tanh_lanes(x.p[s]);
  return x;
}
#endif

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

inline vf vsigmoid(vf x) { return vtanh(x * 0.5f) * 0.5f + 0.5f; }

// Asks the OS to back the 2 MB-aligned part of a large output buffer with transparent huge pages (where THP
// is `madvise` or `always`): XLA:CPU hands out fresh memory for large buffers on every call, and first
// touches of 4 KB pages fault one by one, which stalls the thread that writes them while the other waits at
// the step's barrier.
inline void advise_huge_pages(void* p, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(p) + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

// Scratch memory of the kernels: float vectors whose data starts at a 64-byte boundary, as XLA's buffers do, so
// that no vector load from a row whose offset is a multiple of 16 floats splits a cache line. (malloc aligns to 16
// bytes only, and where in a cache line the data landed then depended on the heap's state: the Strassen kernels ran
// 6-12% slower with it 16 or 32 bytes past a boundary, BENCHMARKS.md.) SEQJAX_SCRATCH_SKEW (bytes; for measuring
// only, through SEQJAX_NATIVE_FLAGS) puts it that far past one.
#ifndef SEQJAX_SCRATCH_SKEW
#define SEQJAX_SCRATCH_SKEW 0
#endif
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  static constexpr std::size_t kAlign = 64;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) {}
  T* allocate(std::size_t n) {  // (kAlign more bytes: room for the skew)
    char* p = static_cast<char*>(::operator new(n * sizeof(T) + kAlign, std::align_val_t(kAlign)));
    return reinterpret_cast<T*>(p + SEQJAX_SCRATCH_SKEW);
  }
  void deallocate(T* p, std::size_t) {
    ::operator delete(reinterpret_cast<char*>(p) - SEQJAX_SCRATCH_SKEW, std::align_val_t(kAlign));
  }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const CacheLineAllocator<U>&) const { return false; }
};
using Scratch = std::vector<float, CacheLineAllocator<float>>;

// Bytes of a core's level-1 data cache and of its level-2 cache (32 KB and 1 MB where the OS does not say).
inline int64_t or_default(long reported, int64_t fallback) { return reported > 0 ? reported : fallback; }
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
inline int64_t l1_bytes() {
  static const int64_t bytes = or_default(sysconf(_SC_LEVEL1_DCACHE_SIZE), 32 << 10);
  return bytes;
}
inline int64_t l2_bytes() {
  static const int64_t bytes = or_default(sysconf(_SC_LEVEL2_CACHE_SIZE), 1 << 20);
  return bytes;
}
#else
inline int64_t l1_bytes() { return 32 << 10; }
inline int64_t l2_bytes() { return 1 << 20; }
#endif

// ---- threads -------------------------------------------------------------------------------------------
// Waits until `done()`: spinning at first (another thread's part of a step ends within microseconds), then
// yielding the core at every look, so that where more threads are runnable than there are cores (another
// process's, or a computation XLA runs beside this one) the thread waited for gets a core instead of this one
// spinning through its time slice.
constexpr int kSpinsBeforeYield = 1024;
template <class Done>
inline void await(Done done) {
  for (int spin = 0; !done(); ++spin) {
    if (spin < kSpinsBeforeYield)
      cpu_relax();
    else
      std::this_thread::yield();
  }
}

class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait() {
    int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    } else {
      await([&] { return gen_.load(std::memory_order_acquire) != gen; });
    }
  }

 private:
  int n_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
};

// Whether a job's workers leave the caller's core (below). SEQJAX_UNSTACK=0 (for measuring only, through
// SEQJAX_NATIVE_FLAGS) leaves where they run to the OS alone.
#ifndef SEQJAX_UNSTACK
#define SEQJAX_UNSTACK 1
#endif

// Persistent worker threads, one per core besides the caller's (SEQJAX_NATIVE_THREADS: cores to use).
//
// The OS may wake a worker onto the core of the thread that woke it, behind that thread, while another core idles:
// the caller then runs the job's parts alone, or spins waiting for a worker queued behind it, until the OS moves
// one of them, milliseconds later. So the caller gives its core up once where a worker has not started within
// 20 us, and a worker that finds itself on the caller's core moves off it (its affinity set without that core,
// then back). Where computations ran beside the medium LSTM forward in one process (Flax's, as in the bench), its
// median went 5.9-6.8 ms -> 4.3-4.4 (BENCHMARKS.md).
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  int max_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // f(id, n) for id in 0..n-1, f(0, n) on the caller; returns when all have returned. One call at a time
  // gets the workers: a call made while another runs (XLA runs independent computations at once, such as the
  // calls a loop dispatches without waiting) sleeps until that one returns and then takes every core. (Running it
  // alone beside the other instead put three busy threads on two cores, whose waits for each other then cost
  // whole time slices: BENCHMARKS.md.) A job must not call `run` (it would wait for itself): the kernels call it
  // only from their handlers.
  void run(int n, const std::function<void(int, int)>& f) {
    n = std::min(n, max_threads());
    if (n <= 1) {
      f(0, 1);
      return;
    }
    std::lock_guard<std::mutex> busy(busy_);
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &f;
      active_ = n;
      caller_cpu_ = current_cpu();
      started_.store(0, std::memory_order_relaxed);
      remaining_.store(n - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
#if SEQJAX_UNSTACK
    {
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
      while (started_.load(std::memory_order_acquire) < n - 1 && std::chrono::steady_clock::now() < until) cpu_relax();
      if (started_.load(std::memory_order_acquire) < n - 1) std::this_thread::yield();
    }
#endif
    f(0, n);
    await([&] { return remaining_.load(std::memory_order_acquire) == 0; });
  }

 private:
  Pool() {
    unsigned hw = std::max(1u, std::thread::hardware_concurrency());
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) hw = std::max(1, CPU_COUNT(&set));
#endif
    if (const char* env = std::getenv("SEQJAX_NATIVE_THREADS")) hw = std::max(1, std::atoi(env));
    for (unsigned i = 1; i < hw; ++i) workers_.emplace_back([this, i] { loop(static_cast<int>(i)); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stop_ = true;
      generation_.fetch_add(1);
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  void loop(int id) {
    int seen = 0;
    for (;;) {
      // spin ~50 us for the next job (the next layer's or the next step's call), then sleep
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      for (int spin = 0; generation_.load(std::memory_order_acquire) == seen; ++spin) {
        cpu_relax();
        if ((spin & 63) == 0 && std::chrono::steady_clock::now() > until) break;
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stop_) return;
      const std::function<void(int, int)>* job;
      int active, caller_cpu;
      {
        std::lock_guard<std::mutex> lock(m_);
        job = job_;
        active = active_;
        caller_cpu = caller_cpu_;
      }
      if (id < active) {
        started_.fetch_add(1, std::memory_order_acq_rel);
#if SEQJAX_UNSTACK
        if (caller_cpu >= 0 && current_cpu() == caller_cpu) move_off(caller_cpu);
#endif
        (*job)(id, active);
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  static int current_cpu() {
#if defined(__linux__)
    return sched_getcpu();
#else
    return -1;
#endif
  }
  // moves this thread off `cpu` (to another it may run on) and lets it run anywhere it could before
  static void move_off(int cpu) {
#if defined(__linux__)
    cpu_set_t allowed, others;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) < 2) return;
    others = allowed;
    CPU_CLR(cpu, &others);
    sched_setaffinity(0, sizeof(others), &others);
    sched_setaffinity(0, sizeof(allowed), &allowed);
#else
    (void)cpu;
#endif
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<int> generation_{0};
  std::atomic<int> remaining_{0};
  const std::function<void(int, int)>* job_ = nullptr;
  int active_ = 0;
  int caller_cpu_ = -1;
  std::atomic<int> started_{0};
  bool stop_ = false;
};

// ---- forward ---------------------------------------------------------------------------------------------
// Batch rows per chunk when the forward pass splits the batch over threads: one 6-row tile, or two where the
// batch is wide and a group's packed weights (`slice` bytes) stay in the L1 cache between the two tiles
// (measured, chunks of 6 / 12 rows, ms: many 198 / 187 rollout, 34.4 / 33.2 forward; large, whose slices do not
// fit, 83.8 / 88.1 rollout; medium, 11 chunks / 6, 5.2 / 5.9 forward).
inline int64_t row_chunk(int64_t B, int64_t slice) { return B >= 96 && 4 * slice <= 3 * l1_bytes() ? 12 : 6; }

#if SEQJAX_VECTOR_BYTES != 64
// *o[r] += sum_k a[r * ar + k * ak] * w[k * ldw + lane], r < R: one 16-lane column of `gemm_acc` in native
// vectors, kBlockRows rows at a time
template <int R>
inline void gemm_column(int64_t K, const float* __restrict a, int64_t ar, int64_t ak, const float* __restrict w,
                        int64_t ldw, vf* const* o) {
  if constexpr (R > kBlockRows) {
    gemm_column<kBlockRows>(K, a, ar, ak, w, ldw, o);
    gemm_column<R - kBlockRows>(K, a + kBlockRows * ar, ar, ak, w, ldw, o + kBlockRows);
  } else {
    vn acc[R][kParts];
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < kParts; ++s) acc[r][s] = o[r]->p[s];
    for (int64_t k = 0; k < K; ++k) {
      const float* wk = w + k * ldw;
      vn b[kParts];
      for (int s = 0; s < kParts; ++s) b[s] = *reinterpret_cast<const vnu*>(wk + s * kNativeLanes);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const vn x = a[r * ar + k * ak] - vn{};
        for (int s = 0; s < kParts; ++s) acc[r][s] += x * b[s];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int s = 0; s < kParts; ++s) o[r]->p[s] = acc[r][s];
  }
}
#endif

// acc[r][j] += sum_k a[r * ar + k * ak] * w[k * ldw + j * L + lane], r < MR, j < NV: the register-blocked product.
// acc: a local array of the caller's that nothing else addresses, its loops unrolled in full (SEQJAX_UNROLL_ALL, here
// and at the caller), so that the compiler keeps it in registers; GCC 12 otherwise kept it in memory and copied it
// in and out around this loop (`python -m benchmarks.kernel_builds`: 3-23% of the kernels' time, BENCHMARKS.md). The
// plain step's `preactivations` is the other way round: its own register copy measured 5-6% slower there.
template <int MR, int NV>
inline void product_rows(int64_t K, const float* __restrict a, int64_t ar, int64_t ak, const float* __restrict w,
                         int64_t ldw, vf (&acc)[MR][NV]) {
#if SEQJAX_VECTOR_BYTES != 64
  for (int j = 0; j < NV; ++j) {
    vf* o[MR];
    for (int r = 0; r < MR; ++r) o[r] = &acc[r][j];
    gemm_column<MR>(K, a, ar, ak, w + j * L, ldw, o);
  }
#else
  // GCC 12 runs this loop up to ~10% faster unrolled twice; clang 14 unrolls it eight times itself, and ran 2.2x
  // slower told to unroll it twice (`python -m benchmarks.kernel_builds`)
#if !defined(__clang__)
#pragma GCC unroll 2
#endif
  for (int64_t k = 0; k < K; ++k) {
    const float* wk = w + k * ldw;
    vf b[NV];
    SEQJAX_UNROLL_ALL
    for (int j = 0; j < NV; ++j) b[j] = load(wk + j * L);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      vf x = splat(a[r * ar + k * ak]);
      SEQJAX_UNROLL_ALL
      for (int j = 0; j < NV; ++j) acc[r][j] += x * b[j];
    }
  }
#endif
}

// out[r][J0 + j] += sum_k a[r * ar + k * ak] * w[k * ldw + j * L + lane], r < MR, j < NV; then, where K2 > 0, the
// same for a second operand (a2 [r * ar2 + k], w2 [k * ldw + ...], K2 rows) onto the same accumulators, which stay
// in registers between the two (GCC 12 wrote them to the stack and back between two calls)
template <int MR, int NV, int J0 = 0>
inline void gemm_acc(int64_t K, const float* __restrict a, int64_t ar, int64_t ak, const float* __restrict w,
                     int64_t ldw, vf (&out)[MR][4], int64_t K2 = 0, const float* __restrict a2 = nullptr,
                     int64_t ar2 = 0, const float* __restrict w2 = nullptr) {
  static_assert(J0 + NV <= 4, "four accumulators per row");
#if SEQJAX_VECTOR_BYTES != 64
  for (int j = 0; j < NV; ++j) {
    vf* o[MR];
    for (int r = 0; r < MR; ++r) o[r] = &out[r][J0 + j];
    gemm_column<MR>(K, a, ar, ak, w + j * L, ldw, o);
    if (K2 > 0) gemm_column<MR>(K2, a2, ar2, 1, w2 + j * L, ldw, o);
  }
#else
  vf acc[MR][NV];
  SEQJAX_UNROLL_ALL
  for (int r = 0; r < MR; ++r)
    SEQJAX_UNROLL_ALL
    for (int j = 0; j < NV; ++j) acc[r][j] = out[r][J0 + j];
  product_rows<MR, NV>(K, a, ar, ak, w, ldw, acc);
  if (K2 > 0) product_rows<MR, NV>(K2, a2, ar2, 1, w2, ldw, acc);
  SEQJAX_UNROLL_ALL
  for (int r = 0; r < MR; ++r)
    SEQJAX_UNROLL_ALL
    for (int j = 0; j < NV; ++j) out[r][J0 + j] = acc[r][j];
#endif
}

// f(std::integral_constant<int, MR>, b0) over the rows 0..n-1 in blocks of at most 6
template <class Fn>
inline void by_rows(int64_t n, Fn&& f) {
  int64_t b = 0;
  for (; b + 6 <= n; b += 6) f(std::integral_constant<int, 6>{}, b);
  switch (n - b) {
    case 5: f(std::integral_constant<int, 5>{}, b); break;
    case 4: f(std::integral_constant<int, 4>{}, b); break;
    case 3: f(std::integral_constant<int, 3>{}, b); break;
    case 2: f(std::integral_constant<int, 2>{}, b); break;
    case 1: f(std::integral_constant<int, 1>{}, b); break;
    default: break;
  }
}

// `valid` floats at p as a vector (zeros past them), and back
inline vf load_part(const float* p, int valid) {
  if (valid == L) return load(p);
  float tmp[L] = {0};
  std::memcpy(tmp, p, valid * sizeof(float));
  return load(tmp);
}
inline void store_part(float* p, vf v, int valid) {
  if (valid == L) return store(p, v);
  float tmp[L];
  store(tmp, v);
  std::memcpy(p, tmp, valid * sizeof(float));
}

// z = [x, h] [w_x; w_h] + b for rows b0..b0+MR-1 of group g (four blocks of 16 columns): x rows at `x`
// (stride F), h rows at `h` (stride hs); w, bias: the packed weights. `gru`: the GRU's packing, blocks
// [n_x, z, r, n_h] of which x's rows feed the first three and h's rows the last three (the rest of the packed
// rows are zeros, skipped here).
template <int MR>
inline void preactivations(int64_t F, int64_t H, const float* x, const float* h, int64_t hs, const float* w,
                           const float* bias, int64_t g, vf (&z)[MR][4], bool gru = false) {
  const float* wg = w + g * (F + H) * GW;
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) z[r][j] = load(bias + g * GW + j * L);
  if (gru) {
    gemm_acc<MR, 3>(F, x, F, 1, wg, GW, z);
    gemm_acc<MR, 3, 1>(H, h, hs, 1, wg + F * GW + L, GW, z);
  } else {
    gemm_acc<MR, 4>(F, x, F, 1, wg, GW, z, H, h, hs, wg + F * GW);
  }
}

// The gates i, f, g, o of one row's pre-activations, in place.
inline void activate(vf (&z)[4]) {
  z[0] = vsigmoid(z[0]);
  z[1] = vsigmoid(z[1]);
  z[2] = vtanh(z[2]);
  z[3] = vsigmoid(z[3]);
}

// One LSTM step for rows b0..b0+MR-1 of group g: from x rows at `x` (stride F) and h_prev [B, H], c updated in
// place and h_next written ([B, H] each); then out(b, h, c) with each row's new h and c (the group's 16 units).
// kz (or null): where the rows' activated gates i, f, g, o go (64 floats a row, rows kzs apart).
// (`Backward::gates` repeats its first lines: a shared helper taking a per-row lambda measured 3-5% slower.)
template <int MR, class Out>
inline void cell_update(int64_t H, vf (&z)[MR][4], float* c, float* h_next, int64_t g, int64_t b0, Out&& out,
                        float* kz, int64_t kzs);

template <int MR, class Out>
inline void cell_rows(int64_t F, int64_t H, const float* x, const float* h_prev, const float* w, const float* bias,
                      float* c, float* h_next, int64_t g, int64_t b0, Out&& out, float* kz, int64_t kzs) {
  vf z[MR][4];
  preactivations<MR>(F, H, x, h_prev + b0 * H, H, w, bias, g, z);
  cell_update<MR>(H, z, c, h_next, g, b0, out, kz, kzs);
}

// The rest of `cell_rows` from the rows' pre-activations z: the gates, c updated in place, h_next written, out.
template <int MR, class Out>
inline void cell_update(int64_t H, vf (&z)[MR][4], float* c, float* h_next, int64_t g, int64_t b0, Out&& out,
                        float* kz, int64_t kzs) {
  const int64_t u0 = g * U;
  const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
  // the rows unrolled, here and in the other three per-row loops after a product: as a loop GCC 12 ran them from
  // a copy of z on the stack (the many closed loop 3-5% slower)
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const int64_t b = b0 + r;
    activate(z[r]);
    const vf i = z[r][0], f = z[r][1], gg = z[r][2], o = z[r][3];
    if (kz)
      for (int j = 0; j < 4; ++j) store(kz + r * kzs + j * L, z[r][j]);
    float* cb = c + b * H + u0;
    vf cn = f * load_part(cb, valid) + i * gg;
    vf hv = o * vtanh(cn);
    store_part(cb, cn, valid);
    store_part(h_next + b * H + u0, hv, valid);
    out(b, hv, cn);
  }
}

// ---- Strassen's product ----------------------------------------------------------------------------------
// An LSTM step's recurrent product h w_h by one level of Winograd's form of Strassen's product: 7 products of half
// the depth instead of 8, 12.5% fewer multiply-adds. A chunk's 2 MR rows are split into a top half (rows
// b0..b0+MR-1) and a bottom half, h's units (the depth) into their first and second halves, and the groups of units
// into p and p + G / 2; with A = [A11 A12; A21 A22] (h's quarters) and B = [B11 B12; B21 B22] (w_h's),
//   S1 = A21 + A22, S2 = S1 - A11, S3 = A11 - A21, S4 = A12 - S2;  T1 = B12 - B11, T2 = B22 - T1,
//   T3 = B22 - B12, T4 = T2 - B21;  M1 = A11 B11, M2 = A12 B21, M3 = S4 B22, M4 = A22 T4, M5 = S1 T1, M6 = S2 T2,
//   M7 = S3 T3;  U2 = M1 + M6, U3 = U2 + M7;
//   C11 = M1 + M2, C12 = U2 + M5 + M3, C21 = U3 - M4, C22 = U3 + M5.
// The T's are formed once per call (`strassen_weights`), the S's once per step and chunk. Each C tile is all four
// gates of one group for MR rows; the input's product x w_x (where the step has inputs) is added to it directly, and
// it is finished by `cell_update` as in `cell_rows`. The same maths in another order of float32 roundings (tests:
// the reference loop's tolerance). Evaluation only: no gates or c kept.

// Whether a layer with H units can take Strassen's product: both halves of h and of the groups whole.
inline bool strassen_fits(int64_t H) { return H >= 32 && H % 32 == 0; }
// A chunk's row blocks: kStrassenMinRows..kStrassenMaxRows rows each (the register tiles of `strassen_tile`), in up
// to kStrassenMaxPairs pairs sharing each weight operand (`strassen_rows`' Q).
constexpr int kStrassenMinRows = 4, kStrassenMaxRows = 6, kStrassenMaxPairs = 2;
static_assert(kStrassenMaxPairs == 2, "`strassen_chunks` and `strassen_step` group one or two pairs");

// w_h's rows of every group (group g's at wh + g * gs, [H, 64]) -> ws [G / 2, 7, H / 2, 64]: per pair of groups p,
// p + G / 2 the operands B11, B21, B22, T1, T2, T3 and -T4 of `strassen_rows`; the pairs p0, p0 + n, .. here.
inline void strassen_weights(int64_t H, int64_t G, const float* wh, int64_t gs, float* ws, int64_t p0 = 0,
                             int64_t n = 1) {
  const int64_t K = H / 2, P = G / 2;
  for (int64_t p = p0; p < P; p += n) {
    const float *w1 = wh + p * gs, *w2 = wh + (p + P) * gs;
    float* o = ws + p * 7 * K * GW;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < GW; ++j) {
        const float b11 = w1[k * GW + j], b12 = w2[k * GW + j], b21 = w1[(K + k) * GW + j],
                    b22 = w2[(K + k) * GW + j];
        const float t1 = b12 - b11, t2 = b22 - t1, t3 = b22 - b12, t4 = t2 - b21;
        const float m[7] = {b11, b21, b22, t1, t2, t3, -t4};
        for (int i = 0; i < 7; ++i) o[(i * K + k) * GW + j] = m[i];
      }
  }
}

// One step of `strassen_rows`: h_prev [B, H] -> c updated in place, h_next [B, H] written; ws: `strassen_weights`;
// bias [G * 64]; inputs (F > 0): row b's x at x + b F, group g's packed w_x at wx + g (F + H) 64; kept (or null):
// row b's new h at kept + b ks (the layer's outputs).
struct StrassenStep {
  int64_t H, G, F;
  const float *h_prev, *ws, *bias, *x, *wx;
  float *c, *h_next, *kept;
  int64_t ks;
};

// One tile of `strassen_rows`: z = init (+ init2) + a w (+ a2 w2) for MR rows of a (stride ar) and w [K, 64], and
// of a2 (stride K2) and w2 [K2, 64] where K2 > 0 (init, init2 or null: zeros); then z into out, or where `finish`
// (a C tile: rows b0.., group g) `cell_update` of z + the bias, straight from the registers. A function of its own so
// that the products share one copy of its code (inlined, they took 47 KB, more than a level-1 instruction cache).
template <int MR>
__attribute__((noinline)) void strassen_tile(int64_t K, const float* a, int64_t ar, const float* w,
                                             const vf (*init)[4], const vf (*init2)[4], vf (*out)[4],
                                             int64_t K2 = 0, const float* a2 = nullptr, const float* w2 = nullptr,
                                             const StrassenStep* finish = nullptr, int64_t g = 0, int64_t b0 = 0) {
  vf acc[MR][4];  // in registers (`product_rows`); z below, which `cell_update` addresses, takes their sums last
  SEQJAX_UNROLL_ALL
  for (int r = 0; r < MR; ++r)
    SEQJAX_UNROLL_ALL
    for (int j = 0; j < 4; ++j) acc[r][j] = init ? (init2 ? init[r][j] + init2[r][j] : init[r][j]) : vf{};
  product_rows<MR, 4>(K, a, ar, 1, w, GW, acc);
  if (!finish) {
    SEQJAX_UNROLL_ALL
    for (int r = 0; r < MR; ++r)
      SEQJAX_UNROLL_ALL
      for (int j = 0; j < 4; ++j) out[r][j] = acc[r][j];
    return;
  }
  if (K2 > 0) product_rows<MR, 4>(K2, a2, K2, 1, w2, GW, acc);
  const StrassenStep& s = *finish;
  vf z[MR][4];
  SEQJAX_UNROLL_ALL
  for (int r = 0; r < MR; ++r)
    SEQJAX_UNROLL_ALL
    for (int j = 0; j < 4; ++j) z[r][j] = acc[r][j] + load(s.bias + g * GW + j * L);
  float* kept = s.kept ? s.kept + g * U : nullptr;
  cell_update<MR>(s.H, z, s.c, s.h_next, g, b0, [&](int64_t b, vf h, vf) { if (kept) store(kept + b * s.ks, h); },
                  nullptr, 0);
}

// `StrassenStep` s for Q pairs of row blocks from row b0, 2 MR rows each (see above; a pair's top half first).
// sums: scratch for S1..S4, 4 Q MR H / 2 floats.
template <int MR, int Q>
inline void strassen_rows(const StrassenStep& s, int64_t b0, float* sums) {
  const int64_t H = s.H, K = H / 2, P = s.G / 2;
  auto top = [&](int q) { return s.h_prev + (b0 + 2 * q * MR) * H; };  // pair q's rows [A11 A12]; then [A21 A22]
  auto sum = [&](int q, int i) { return sums + (4 * q + i) * MR * K; };  // its S1..S4 (i = 0..3)
  auto rows = [&](int q, bool bottom) { return b0 + (2 * q + bottom) * MR; };
  auto x = [&](int q, bool bottom) { return s.F ? s.x + rows(q, bottom) * s.F : nullptr; };
  auto wx = [&](int64_t g) { return s.wx + g * (s.F + H) * GW; };
  for (int q = 0; q < Q; ++q)
    for (int r = 0; r < MR; ++r)
      for (int64_t k = 0; k < K; k += L) {
        const float *t = top(q) + r * H + k, *b = t + MR * H;
        const vf a11 = load(t), a12 = load(t + K), a21 = load(b), a22 = load(b + K), v1 = a21 + a22, v2 = v1 - a11;
        store(sum(q, 0) + r * K + k, v1);
        store(sum(q, 1) + r * K + k, v2);
        store(sum(q, 2) + r * K + k, a11 - a21);
        store(sum(q, 3) + r * K + k, a12 - v2);
      }
  // each product for every pair q in turn: its weight operand is read from L2 once for all Q
  for (int64_t p = 0; p < P; ++p) {
    const float* wp = s.ws + p * 7 * K * GW;
    auto operand = [&](int i) { return wp + i * K * GW; };
    vf m1[Q][MR][4], u2[Q][MR][4], u3[Q][MR][4], m5[Q][MR][4];
    for (int q = 0; q < Q; ++q) strassen_tile<MR>(K, top(q), H, operand(0), nullptr, nullptr, m1[q]);  // M1
    for (int q = 0; q < Q; ++q)  // C11 = M1 + M2 (+ its inputs' product), finished
      strassen_tile<MR>(K, top(q) + K, H, operand(1), m1[q], nullptr, nullptr, s.F, x(q, false), wx(p), &s, p,
                        rows(q, false));
    for (int q = 0; q < Q; ++q) strassen_tile<MR>(K, sum(q, 1), K, operand(4), m1[q], nullptr, u2[q]);  // U2
    for (int q = 0; q < Q; ++q) strassen_tile<MR>(K, sum(q, 2), K, operand(5), u2[q], nullptr, u3[q]);  // U3
    for (int q = 0; q < Q; ++q) strassen_tile<MR>(K, sum(q, 0), K, operand(3), nullptr, nullptr, m5[q]);  // M5
    for (int q = 0; q < Q; ++q) {  // C12 = U2 + M5 + M3, C22 = U3 + M5 (each + its inputs' product), finished
      strassen_tile<MR>(K, sum(q, 3), K, operand(2), u2[q], m5[q], nullptr, s.F, x(q, false), wx(p + P), &s, p + P,
                        rows(q, false));
      strassen_tile<MR>(0, nullptr, 0, nullptr, u3[q], m5[q], nullptr, s.F, x(q, true), wx(p + P), &s, p + P,
                        rows(q, true));
    }
    for (int q = 0; q < Q; ++q)  // C21 = U3 - M4 (+ its inputs' product), finished
      strassen_tile<MR>(K, top(q) + MR * H + K, H, operand(6), u3[q], nullptr, nullptr, s.F, x(q, true), wx(p), &s,
                        p, rows(q, true));
  }
}

// One GRU step (`reset_after`: n = tanh(x w_n + b_xn + r (h w_hn + b_hn)), h' = z h + (1 - z) n) for rows
// b0..b0+MR-1 of group g, packed as in `preactivations` with `gru` (the bias of z and r: b_x + b_h), from x rows
// at `x` and h_prev [B, H] into h_next; then out(b, h, h) with each row's new h. `folded`: the closed loop's
// steps without inputs, whose h rows feed all four blocks (n_x: the fed-back input's projection).
// (`Backward::gru_gates` repeats its first lines, as `cell_rows` and `Backward::gates` do.)
template <int MR, class Out>
inline void gru_rows(int64_t F, int64_t H, const float* x, const float* h_prev, const float* w, const float* bias,
                     float* h_next, int64_t g, int64_t b0, bool folded, Out&& out) {
  vf z[MR][4];
  preactivations<MR>(F, H, x, h_prev + b0 * H, H, w, bias, g, z, !folded);
  const int64_t u0 = g * U;
  const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const int64_t b = b0 + r;
    const vf update = vsigmoid(z[r][1]), reset = vsigmoid(z[r][2]);
    const vf n = vtanh(z[r][0] + reset * z[r][3]);
    vf hv = update * load_part(h_prev + b * H + u0, valid) + (1.0f - update) * n;
    store_part(h_next + b * H + u0, hv, valid);
    out(b, hv, hv);
  }
}

// An affine head on rows b0..b0+MR-1 of hs [B, H]: y = h wd + bd, wd [H, FP] and bd [FP] (columns padded with
// zeros to FP, a multiple of 16); store(b, col, y, valid) with each row's 16 columns from col, `valid` of them
// real (FO in all). Up to 4 columns of 16 at a time, their count a constant of each call (SEQJAX_UNROLL_ALL).
template <int MR, class Store>
inline void head_rows(int64_t H, int64_t FP, int64_t FO, const float* hs, int64_t b0, const float* wd,
                      const float* bd, Store&& store) {
  auto columns = [&](int64_t v0, auto nv) {
    constexpr int NV = decltype(nv)::value;
    vf acc[MR][4];
    SEQJAX_UNROLL_ALL
    for (int r = 0; r < MR; ++r)
      SEQJAX_UNROLL_ALL
      for (int j = 0; j < NV; ++j) acc[r][j] = load(bd + (v0 + j) * L);
    gemm_acc<MR, NV>(H, hs + b0 * H, H, 1, wd + v0 * L, FP, acc);
    SEQJAX_UNROLL_ALL
    for (int r = 0; r < MR; ++r)
      SEQJAX_UNROLL_ALL
      for (int j = 0; j < NV; ++j) {
        const int64_t col = (v0 + j) * L;
        store(b0 + r, col, acc[r][j], static_cast<int>(std::min<int64_t>(L, FO - col)));
      }
  };
  for (int64_t v0 = 0; v0 < FP / L; v0 += 4) {
    switch (std::min<int64_t>(4, FP / L - v0)) {
      case 4: columns(v0, std::integral_constant<int, 4>{}); break;
      case 3: columns(v0, std::integral_constant<int, 3>{}); break;
      case 2: columns(v0, std::integral_constant<int, 2>{}); break;
      default: columns(v0, std::integral_constant<int, 1>{}); break;
    }
  }
}

// One LSTM layer over time. xs [T, B, F]; w [G, F + H, 64] (packed [w_x; w_h]); bias [G * 64];
// ys [B, T, H] (batch_major) or [T, B, H]; h, c: the carry, updated in place ([B, H] each); hbuf [2, B, H]
// scratch; cs (or null): every step's c, laid out as ys (for the backward pass). With a head (wd, or null:
// an affine map to FO outputs, as in `head_rows`), ys holds its outputs instead ([B, T, FO] or [T, B, FO]):
// after the step's barrier each thread forms those of its share of the batch rows; training keeps every step's
// h in hs (and c in cs) besides.
//
// Closed loop (wf, or null): the head's output is the next input, x_{t+1} = y_t (FO = F), and xs holds x_0
// only. Its projection is folded into the recurrent one, x_{t+1} w_x = h_t (wd w_x) + bd w_x, so steps
// 1..T-1 run an LSTM without inputs on wf ([G, H, 64]: w_h + wd w_x, packed) and biasf (b + bd w_x), and y_t
// stays off the recurrence.
//
// GRU (`gru`): the same with `gru_rows`' packing and no c (c, cs null); its closed loop's folded weights fill
// all four blocks of the h rows (n_x: h_t wd w_xn + bd w_xn).
struct Forward {
  int64_t T, B, F, H, G;
  const float *xs, *w, *bias;
  float *ys, *cs, *h, *c, *hbuf;
  bool batch_major;
  int threads;  // at most; 0: all
  float* zs = nullptr;  // (or null) every step's activated gates, [rows laid out as ys, G * 64]
  bool gru = false;
  const float *wd = nullptr, *bd = nullptr;
  int64_t FO = 0, FP = 0;
  float* hs = nullptr;  // (or null) with a head: every step's h as well, laid out as cs (training)
  const float *wf = nullptr, *biasf = nullptr;
  bool strassen = false;  // the recurrent products by `strassen_rows` where they fit (`run` forms their operands)

  int64_t out_row(int64_t t, int64_t b) const { return batch_major ? b * T + t : t * B + b; }
  float* kept() const { return wd ? hs : ys; }  // where the layer's outputs go (with a head, ys holds its outputs)

  template <int MR>
  void rows(int64_t t, int64_t g, int64_t b0) const {
    const int64_t u0 = g * U;
    const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
    const bool folded = wf && t > 0;
    const float* x = folded ? nullptr : xs + (t * B + b0) * F;
    const float *h_prev = hbuf + (t % 2) * B * H, *wt = folded ? wf : w, *bt = folded ? biasf : bias;
    float* h_next = hbuf + ((t + 1) % 2) * B * H;
    float* kept = this->kept();
    auto out = [&](int64_t b, vf hv, vf cn) {
      if (!kept) return;
      const int64_t y = out_row(t, b) * H + u0;
      store_part(kept + y, hv, valid);
      if (cs) store_part(cs + y, cn, valid);
    };
    if (gru)
      gru_rows<MR>(folded ? 0 : F, H, x, h_prev, wt, bt, h_next, g, b0, folded, out);
    else
      cell_rows<MR>(folded ? 0 : F, H, x, h_prev, wt, bt, c, h_next, g, b0, out,
                    zs ? zs + out_row(t, b0) * G * GW + g * GW : nullptr, (batch_major ? T : 1) * G * GW);
  }
  // A chunk of batch rows r0..r1-1 that one thread runs through every step; mr > 0: by `strassen_rows`, as `pairs`
  // pairs of row blocks of mr rows each.
  struct RowChunk {
    int64_t r0, r1;
    int mr = 0, pairs = 0;
  };
  // Whether the steps may take Strassen's product: asked for, an LSTM's evaluation, and H that splits.
  bool strassen_applies() const { return strassen && !gru && !cs && !zs && strassen_fits(H); }
  // Chunks for `strassen_rows`: pairs of row blocks of MR rows, MR 4..6, and their count a multiple of 4, grouped
  // two by two where both have the same MR (one where not); and a last chunk of one row on `cells` where B is odd.
  // Two threads take as many. The same chunks for any number of threads, so the same bits wherever there are at
  // least two a thread (`run` takes the plain product where not). None where the batch is too narrow for one pair
  // of 4 rows.
  std::vector<RowChunk> strassen_chunks() const {
    std::vector<RowChunk> chunks;
    for (int64_t multiple : {4, 2}) {
      const int64_t P = (B + 2 * kStrassenMaxRows * multiple - 1) / (2 * kStrassenMaxRows * multiple) * multiple;
      const int64_t mr = B / (2 * P), extra = (B - 2 * P * mr) / 2;
      if (mr < kStrassenMinRows) continue;
      for (int64_t i = 0, r = 0; i < P;) {
        const int m = static_cast<int>(mr + (i < extra ? 1 : 0));
        const int n = i + 1 < P && mr + (i + 1 < extra ? 1 : 0) == m ? 2 : 1;
        chunks.push_back({r, r + 2 * m * n, m, n});
        r += 2 * m * n;
        i += n;
      }
      if (B % 2) chunks.push_back({B - 1, B});
      break;
    }
    return chunks;
  }
  // step t of every group for the chunk's rows by `strassen_rows` (in a closed loop, a folded step: t > 0);
  // operands: `strassen_weights` of w_h (of wf in a closed loop)
  void strassen_step(int64_t t, const RowChunk& k, const float* operands, float* sums) const {
    const bool folded = wf != nullptr;
    float* kept = this->kept();
    const StrassenStep s{H, G, folded ? 0 : F, hbuf + (t % 2) * B * H, operands, folded ? biasf : bias,
                         folded ? nullptr : xs + t * B * F, w, c, hbuf + ((t + 1) % 2) * B * H,
                         kept ? kept + out_row(t, 0) * H : nullptr, (batch_major ? T : 1) * H};
    auto run = [&](auto mr, auto q) { strassen_rows<mr.value, q.value>(s, k.r0, sums); };
    using one = std::integral_constant<int, 1>;
    using two = std::integral_constant<int, 2>;
    auto pairs = [&](auto mr) { return k.pairs == 2 ? run(mr, two{}) : run(mr, one{}); };
    switch (k.mr) {
      case 4: pairs(std::integral_constant<int, 4>{}); break;
      case 5: pairs(std::integral_constant<int, 5>{}); break;
      default: pairs(std::integral_constant<int, 6>{}); break;
    }
  }
  // step t of the groups g0..g1-1 for the rows r0..r1-1
  void cells(int64_t t, int64_t g0, int64_t g1, int64_t r0, int64_t r1) const {
    for (int64_t g = g0; g < g1; ++g) by_rows(r1 - r0, [&](auto mr, int64_t b) { rows<mr.value>(t, g, r0 + b); });
  }
  // the head's outputs of step t for the rows r0..r1-1 (every unit of their h_t formed)
  void head(int64_t t, int64_t r0, int64_t r1) const {
    if (!wd) return;
    by_rows(r1 - r0, [&](auto mr, int64_t b) {
      head_rows<mr.value>(H, FP, FO, hbuf + ((t + 1) % 2) * B * H, r0 + b, wd, bd,
                          [&](int64_t row, int64_t col, vf y, int valid) {
                            store_part(ys + out_row(t, row) * FO + col, y, valid);
                          });
    });
  }
  void run() {
    advise_huge_pages(ys, T * B * (wd ? FO : H) * sizeof(float));
    if (cs) advise_huge_pages(cs, T * B * H * sizeof(float));
    if (hs) advise_huge_pages(hs, T * B * H * sizeof(float));
    if (zs) advise_huge_pages(zs, T * B * G * GW * sizeof(float));
    std::memcpy(hbuf, h, B * H * sizeof(float));
    Pool& pool = Pool::get();
    const int n = std::min(threads > 0 ? threads : pool.max_threads(), pool.max_threads());
    // By rows: batch rows never meet, so each thread takes the next chunk of rows and runs it through every step
    // on its own, with no barrier; a thread the OS pauses (another process on its core) delays only its chunk
    // while the others take the rest. Chunks for Strassen's product where it applies and gives two a thread,
    // else of `row_chunk` rows where there are two a thread; else by units below.
    std::vector<RowChunk> row_chunks = strassen_applies() ? strassen_chunks() : std::vector<RowChunk>{};
    Scratch strassen_operands;
    if (row_chunks.size() >= 2 * static_cast<size_t>(n)) {
      strassen_operands.resize(7 * G * H * GW / 4);
      const float* wh = wf ? wf : w + F * GW;  // group g's w_h at wh + g gs
      const int64_t gs = (wf ? H : F + H) * GW;
      pool.run(n, [&](int id, int m) { strassen_weights(H, G, wh, gs, strassen_operands.data(), id, m); });
    } else {
      row_chunks.clear();
      const int64_t chunk = row_chunk(B, (F + H) * GW * sizeof(float));
      if (n > 1 && (B + chunk - 1) / chunk >= 2 * n)
        for (int64_t r0 = 0; r0 < B; r0 += chunk) row_chunks.push_back({r0, std::min(B, r0 + chunk)});
    }
    if (!row_chunks.empty()) {
      std::atomic<int64_t> next{0};
      const int64_t count = static_cast<int64_t>(row_chunks.size());
      pool.run(n, [&](int, int) {
        Scratch sums(strassen_operands.empty() ? 0 : 4 * kStrassenMaxPairs * kStrassenMaxRows * (H / 2));
        for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < count;) {
          const RowChunk& chunk = row_chunks[k];
          for (int64_t t = 0; t < T; ++t) {
            if (chunk.mr > 0 && !(wf && t == 0))  // a closed loop's first step has inputs: plain
              strassen_step(t, chunk, strassen_operands.data(), sums.data());
            else
              cells(t, 0, G, chunk.r0, chunk.r1);
            head(t, chunk.r0, chunk.r1);
          }
        }
      });
    } else {
      // By units (few rows: a chunk each would leave the threads unevenly loaded), meeting at every step
      SpinBarrier barrier(static_cast<int>(std::min<int64_t>(n, G)));
      pool.run(static_cast<int>(std::min<int64_t>(n, G)), [&](int id, int m) {  // m: n, or 1 when the
        int64_t g0 = G * id / m, g1 = G * (id + 1) / m;  // workers are busy; the groups this thread owns
        int64_t r0 = B * id / m, r1 = B * (id + 1) / m;  // with a head, the rows whose outputs it forms
        for (int64_t t = 0; t < T; ++t) {
          cells(t, g0, g1, 0, B);
          if (m > 1) barrier.wait();
          head(t, r0, r1);
        }
      });
    }
    std::memcpy(h, hbuf + (T % 2) * B * H, B * H * sizeof(float));
  }
};

// The backward pass of `Forward` run with `cs`: from the gradients of the outputs (dys, laid out as ys) and
// of the final carry, the steps from the last. Per step a thread recomputes its units' gates from
// [x_t, h_{t-1}] (the kept outputs), forms their pre-activation gradients dz (into dzbuf[t % 2], [B, G * 64])
// and the gradient reaching c_{t-1}, and adds [x_t, h_{t-1}]^T dz to its columns of dw; after the barrier
// (dz of every unit is needed) it forms its units' columns of dz w_h^T, the gradient reaching h_{t-1}, and
// its share of the rows of dz w_x^T, the gradient of x_t (all of it on the last thread left that thread
// 1.5-2x the others' work after the barrier: backward medium 13.7 vs 15.5 ms, large 177 vs 200).
// wt [G * 64, NP]: the packed weights transposed, columns [h units (G * 16), x features (padded to 16)]. dh,
// dc: the carry's gradient, updated in place; dw, db accumulate the packed weights' gradient.
//
// GRU (`gru`; c0, cs, dc null): dz holds the gradients of the blocks [n_x, z, r, n_h] (dn, dz, dr, dn r), of
// which x's rows take the first three and h's rows the last three; the gradient reaching h_{t-1} directly
// (dh z) waits in dh for the product after the barrier to be added.
//
// With a head (`Forward` with wd and hs; dout, or null): the gradient of its outputs dout (rows laid out as ys,
// FP columns, zeros past FO) replaces dys: each row's h_t gradient is dout_t wd^T, formed in registers from
// wdt [FO, G * 16] (wd transposed, zeros past H), and dwd [G * 16, FP] accumulates h_t^T dout_t (each thread its
// groups' rows, or its own buffer by rows); no [T, B, H] gradient of the outputs is written.
struct Backward {
  int64_t T, B, F, H, G, NP;
  const float *xs, *w, *wt, *bias, *h0, *c0, *ys, *cs, *dys;
  float *dxs, *dw, *db, *dh, *dc, *dzbuf;
  bool batch_major;
  int threads;
  bool gru = false;
  const float* zs = nullptr;  // (or null) the gates `Forward` kept: read instead of recomputed
  const float *dout = nullptr, *wdt = nullptr;  // (or null) the head's, as above
  float* dwd = nullptr;
  int64_t FO = 0, FP = 0;

  int64_t row(int64_t t, int64_t b) const { return batch_major ? b * T + t : t * B + b; }
  // h_t and c_t of row b (t = -1: the initial carry), and the stride between rows
  const float* h_at(int64_t t, int64_t b) const { return t < 0 ? h0 + b * H : ys + row(t, b) * H; }
  const float* c_at(int64_t t, int64_t b) const { return t < 0 ? c0 + b * H : cs + row(t, b) * H; }
  int64_t stride(int64_t t) const { return t < 0 || !batch_major ? H : T * H; }
  float* dz_at(int64_t t) const { return dzbuf + (t % 2) * B * G * GW; }

  // The gradient reaching the outputs h_t of rows b0..b0+MR-1, units u0..u0+15: dys's, or with a head dout_t wd^T
  template <int MR>
  void output_grads(int64_t t, int64_t b0, int64_t u0, int valid, vf (&dy)[MR][4]) const {
    if (!dout) {
      for (int r = 0; r < MR; ++r) dy[r][0] = load_part(dys + row(t, b0 + r) * H + u0, valid);
      return;
    }
    for (int r = 0; r < MR; ++r) dy[r][0] = vf{};
    gemm_acc<MR, 1>(FO, dout + row(t, b0) * FP, row(t, b0 + 1) * FP - row(t, b0) * FP, 1, wdt + u0, G * U, dy);
  }

  // dwdt[g's units] += h_t^T dout_t over the rows r0..r1-1 (the head's weight gradient)
  void head_weight_grads(int64_t t, int64_t g, int64_t r0, int64_t r1, float* dwdt) const {
    const int64_t u0 = g * U, ds = row(t, r0 + 1) * FP - row(t, r0) * FP;
    const float *h = h_at(t, r0) + u0, *d = dout + row(t, r0) * FP;
    for (int64_t v0 = 0; v0 < FP / L; v0 += 4) {
      const int64_t nv = std::min<int64_t>(4, FP / L - v0);
      by_rows(std::min<int64_t>(U, H - u0), [&](auto mr, int64_t j0) {
        constexpr int MR = mr.value;
        vf acc[MR][4];
        float* out = dwdt + (u0 + j0) * FP + v0 * L;
        for (int r = 0; r < MR; ++r)
          for (int j = 0; j < nv; ++j) acc[r][j] = load(out + r * FP + j * L);
        switch (nv) {
          case 4: gemm_acc<MR, 4>(r1 - r0, h + j0, 1, stride(t), d + v0 * L, ds, acc); break;
          case 3: gemm_acc<MR, 3>(r1 - r0, h + j0, 1, stride(t), d + v0 * L, ds, acc); break;
          case 2: gemm_acc<MR, 2>(r1 - r0, h + j0, 1, stride(t), d + v0 * L, ds, acc); break;
          default: gemm_acc<MR, 1>(r1 - r0, h + j0, 1, stride(t), d + v0 * L, ds, acc); break;
        }
        for (int r = 0; r < MR; ++r)
          for (int j = 0; j < nv; ++j) store(out + r * FP + j * L, acc[r][j]);
      });
    }
  }

  template <int MR>
  void gates(int64_t t, int64_t g, int64_t b0) const {
    vf z[MR][4];
    if (!zs) preactivations<MR>(F, H, xs + (t * B + b0) * F, h_at(t - 1, b0), stride(t - 1), w, bias, g, z);
    const int64_t u0 = g * U;
    const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
    vf dy[MR][4];
    output_grads<MR>(t, b0, u0, valid, dy);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const int64_t b = b0 + r;
      if (zs)
        for (int j = 0; j < 4; ++j) z[r][j] = load(zs + row(t, b) * G * GW + g * GW + j * L);
      else
        activate(z[r]);
      const vf i = z[r][0], f = z[r][1], gg = z[r][2], o = z[r][3];
      vf c_prev = load_part(c_at(t - 1, b) + u0, valid);
      vf tc = vtanh(load_part(c_at(t, b) + u0, valid));
      vf dhv = dy[r][0] + load_part(dh + b * H + u0, valid);
      vf dcv = load_part(dc + b * H + u0, valid) + dhv * o * (1.0f - tc * tc);
      float* dz = dz_at(t) + b * G * GW + g * GW;
      store(dz, dcv * gg * i * (1.0f - i));
      store(dz + L, dcv * c_prev * f * (1.0f - f));
      store(dz + 2 * L, dcv * i * (1.0f - gg * gg));
      store(dz + 3 * L, dhv * tc * o * (1.0f - o));
      store_part(dc + b * H + u0, dcv * f, valid);
    }
  }

  template <int MR>
  void gru_gates(int64_t t, int64_t g, int64_t b0) const {
    vf z[MR][4];
    preactivations<MR>(F, H, xs + (t * B + b0) * F, h_at(t - 1, b0), stride(t - 1), w, bias, g, z, true);
    const int64_t u0 = g * U;
    const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
    vf dy[MR][4];
    output_grads<MR>(t, b0, u0, valid, dy);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const int64_t b = b0 + r;
      const vf update = vsigmoid(z[r][1]), reset = vsigmoid(z[r][2]), hn = z[r][3];
      const vf n = vtanh(z[r][0] + reset * hn);
      vf h_prev = load_part(h_at(t - 1, b) + u0, valid);
      vf dhv = dy[r][0] + load_part(dh + b * H + u0, valid);
      vf dn = dhv * (1.0f - update) * (1.0f - n * n);
      float* dz = dz_at(t) + b * G * GW + g * GW;
      store(dz, dn);
      store(dz + L, dhv * (h_prev - n) * update * (1.0f - update));
      store(dz + 2 * L, dn * hn * reset * (1.0f - reset));
      store(dz + 3 * L, dn * reset);
      store_part(dh + b * H + u0, dhv * update, valid);
    }
  }

  // dwt[g] += a^T dz[:, g], dbt[g] += sum_k dz[k, g] over K rows: a's x part at ax (row stride axs), its h part at
  // ah (stride ahs), dz rows G * 64 apart
  void weight_grads(int64_t g, int64_t K, const float* ax, int64_t axs, const float* ah, int64_t ahs,
                    const float* dzs, float* dwt, float* dbt) const {
    const float* dz = dzs + g * GW;
    float* dwg = dwt + g * (F + H) * GW;
    // out += a^T dz over the blocks J0..J0+NV-1
    auto add = [&](auto nv, auto j0, int64_t n, const float* a, int64_t ak, float* out) {
      constexpr int NV = decltype(nv)::value, J0 = decltype(j0)::value;
      by_rows(n, [&](auto mr, int64_t r0) {
        constexpr int MR = mr.value;
        vf acc[MR][4];
        for (int r = 0; r < MR; ++r)
          for (int j = J0; j < J0 + NV; ++j) acc[r][j] = load(out + (r0 + r) * GW + j * L);
        gemm_acc<MR, NV, J0>(K, a + r0, 1, ak, dz + J0 * L, G * GW, acc);
        for (int r = 0; r < MR; ++r)
          for (int j = J0; j < J0 + NV; ++j) store(out + (r0 + r) * GW + j * L, acc[r][j]);
      });
    };
    using I0 = std::integral_constant<int, 0>;
    using I1 = std::integral_constant<int, 1>;
    using I3 = std::integral_constant<int, 3>;
    using I4 = std::integral_constant<int, 4>;
    if (gru) {
      add(I3{}, I0{}, F, ax, axs, dwg);
      add(I3{}, I1{}, H, ah, ahs, dwg + F * GW);
    } else {
      add(I4{}, I0{}, F, ax, axs, dwg);
      add(I4{}, I0{}, H, ah, ahs, dwg + F * GW);
    }
    vf sum[4] = {load(dbt + g * GW), load(dbt + g * GW + L), load(dbt + g * GW + 2 * L), load(dbt + g * GW + 3 * L)};
    for (int64_t k = 0; k < K; ++k)
      for (int j = 0; j < 4; ++j) sum[j] += load(dz + k * G * GW + j * L);
    for (int j = 0; j < 4; ++j) store(dbt + g * GW + j * L, sum[j]);
  }

  // columns v*16.. of dz wt for NV vectors from v, all h units (v < G) or all x features: into dh or dxs. GRU:
  // h's from the blocks [z, r, n_h] of each group, added to the direct part waiting in dh; x's from [n_x, z, r].
  template <int NV>
  void recurrent_tile(int64_t t, int64_t v, int64_t r0, int64_t r1) const {
    const float* dz = dz_at(t);
    const bool to_h = v < G;
    by_rows(r1 - r0, [&](auto mr, int64_t b) {
      constexpr int MR = mr.value;
      const int64_t b0 = r0 + b;
      vf acc[MR][4] = {};
      if (!gru) {
        gemm_acc<MR, NV>(G * GW, dz + b0 * G * GW, G * GW, 1, wt + v * L, NP, acc);
      } else {
        const int64_t skip = to_h ? L : 0;
        if (to_h)
          for (int r = 0; r < MR; ++r)
            for (int j = 0; j < NV; ++j) {
              const int64_t col = (v + j) * L;
              acc[r][j] = load_part(dh + (b0 + r) * H + col, static_cast<int>(std::min<int64_t>(L, H - col)));
            }
        for (int64_t g = 0; g < G; ++g)
          gemm_acc<MR, NV>(3 * L, dz + b0 * G * GW + g * GW + skip, G * GW, 1, wt + (g * GW + skip) * NP + v * L,
                           NP, acc);
      }
      for (int j = 0; j < NV; ++j) {
        const int64_t col = (v + j) * L;
        for (int r = 0; r < MR; ++r) {
          const int64_t b = b0 + r;
          if (col < G * U)
            store_part(dh + b * H + col, acc[r][j], static_cast<int>(std::min<int64_t>(L, H - col)));
          else
            store_part(dxs + (t * B + b) * F + col - G * U, acc[r][j],
                       static_cast<int>(std::min<int64_t>(L, F - (col - G * U))));
        }
      }
    });
  }

  // the tiles of the vectors v0..v1-1, split where the h units end
  void recurrent_grads(int64_t t, int64_t v0, int64_t v1, int64_t r0, int64_t r1) const {
    if (v0 < G && v1 > G) {
      recurrent_grads(t, v0, G, r0, r1);
      v0 = G;
    }
    int64_t v = v0;
    for (; v + 4 <= v1; v += 4) recurrent_tile<4>(t, v, r0, r1);
    switch (v1 - v) {
      case 3: recurrent_tile<3>(t, v, r0, r1); break;
      case 2: recurrent_tile<2>(t, v, r0, r1); break;
      case 1: recurrent_tile<1>(t, v, r0, r1); break;
      default: break;
    }
  }

  // step t's gate gradients of the groups g0..g1-1 for the rows r0..r1-1
  void gate_grads(int64_t t, int64_t g0, int64_t g1, int64_t r0, int64_t r1) const {
    for (int64_t g = g0; g < g1; ++g)
      by_rows(r1 - r0, [&](auto mr, int64_t b) {
        if (gru)
          gru_gates<mr.value>(t, g, r0 + b);
        else
          gates<mr.value>(t, g, r0 + b);
      });
  }
  void run() {
    const int64_t nw = G * (F + H) * GW, nb = G * GW, nd = dout ? G * U * FP : 0;
    std::memset(dw, 0, nw * sizeof(float));
    std::memset(db, 0, nb * sizeof(float));
    if (nd) std::memset(dwd, 0, nd * sizeof(float));
    Pool& pool = Pool::get();
    const int n = std::min(threads > 0 ? threads : pool.max_threads(), pool.max_threads());
    const int64_t chunk = row_chunk(B, (F + H) * GW * sizeof(float)), chunks = (B + chunk - 1) / chunk;
    // By rows, as `Forward::run`, where what a thread reads every step besides its rows stays in its L2 cache
    // (the transposed weights and its own weight gradients: it adds its chunks' into a buffer of its own,
    // kWeightSteps steps of a chunk at a time; and the weights where it recomputes the gates) and the last chunks
    // leave little unevenness. Train step by rows vs units, ms: many LSTM 159-161 vs 185-187, GRU 130 vs 146-150;
    // medium (11 chunks) with kept gates LSTM 19.8-20.6 vs 21.8-22.0, GRU 19.8-20.5 vs 22.3-22.5, but LSTM
    // recomputing 23.2-25.4 vs 21.2-21.9 (from eight chunks a thread there); large with kept gates 271 vs
    // 270-281 (past L2: by units), recomputing 334-352 vs 306.
    const int64_t reads = (zs ? 2 : 3) * nw * static_cast<int64_t>(sizeof(float));
    if (n > 1 && chunks >= (zs || gru ? 2 : 8) * n && reads <= l2_bytes() / 2) {
      const int64_t S = kWeightSteps, FH = F + H, Z = G * GW;
      // each thread's buffer and its dz rows start at 64-byte boundaries (nw, nb, nd and Z are multiples of L)
      const int64_t na = (S * chunk * FH + L - 1) / L * L, per = nw + nb + nd + na + S * chunk * Z;
      Scratch own(static_cast<size_t>(n * per), 0.0f);
      std::atomic<int64_t> next{0};
      pool.run(n, [&](int id, int) {
        float *dwp = own.data() + id * per, *dbp = dwp + nw, *dwdp = dbp + nb;
        float *as = dwdp + nd, *dzs = as + na;  // S steps of a chunk: [x_t, h_{t-1}] rows, dz rows
        for (int64_t k; (k = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
          const int64_t r0 = k * chunk, r1 = std::min(B, r0 + chunk), nr = r1 - r0;
          int64_t kept = 0;
          for (int64_t t = T - 1; t >= 0; --t) {
            gate_grads(t, 0, G, r0, r1);
            if (nd)
              for (int64_t g = 0; g < G; ++g) head_weight_grads(t, g, r0, r1, dwdp);
            for (int64_t b = 0; b < nr; ++b) {
              float* a = as + (kept * nr + b) * FH;
              std::memcpy(a, xs + (t * B + r0 + b) * F, F * sizeof(float));
              std::memcpy(a + F, h_at(t - 1, r0 + b), H * sizeof(float));
              std::memcpy(dzs + (kept * nr + b) * Z, dz_at(t) + (r0 + b) * Z, Z * sizeof(float));
            }
            if (++kept == S || t == 0) {
              for (int64_t g = 0; g < G; ++g) weight_grads(g, kept * nr, as, FH, as + F, FH, dzs, dwp, dbp);
              kept = 0;
            }
            recurrent_grads(t, 0, NP / L, r0, r1);
          }
        }
      });
      for (int i = 0; i < n; ++i) {  // (a thread the pool did not start left its buffer zero)
        const float* p = own.data() + i * per;
        for (int64_t j = 0; j < nw; ++j) dw[j] += p[j];
        for (int64_t j = 0; j < nb; ++j) db[j] += p[nw + j];
        for (int64_t j = 0; j < nd; ++j) dwd[j] += p[nw + nb + j];
      }
      return;
    }
    SpinBarrier barrier(static_cast<int>(std::min<int64_t>(n, G)));
    pool.run(static_cast<int>(std::min<int64_t>(n, G)), [&](int id, int m) {
      int64_t g0 = G * id / m, g1 = G * (id + 1) / m;
      int64_t r0 = B * id / m, r1 = B * (id + 1) / m;  // the rows of x_t's gradient this thread forms
      for (int64_t t = T - 1; t >= 0; --t) {
        gate_grads(t, g0, g1, 0, B);
        for (int64_t g = g0; g < g1; ++g) {
          weight_grads(g, B, xs + t * B * F, F, h_at(t - 1, 0), stride(t - 1), dz_at(t), dw, db);
          if (nd) head_weight_grads(t, g, 0, B, dwd);
        }
        if (m > 1) barrier.wait();
        recurrent_grads(t, g0, g1, 0, B);
        recurrent_grads(t, G, NP / L, r0, r1);
      }
    });
  }
};

struct Dims {
  int64_t T, B, F, H, G;
};

// The sizes of a call; false when the packed weights do not fit them.
bool dims_of(F32& xs, F32& w, F32& bias, F32& h0, Dims& d) {
  auto xd = xs.dimensions();
  d = Dims{xd[0], xd[1], xd[2], h0.dimensions()[1], 0};
  d.G = (d.H + U - 1) / U;
  return w.dimensions().size() == 3 && w.dimensions()[0] == d.G && w.dimensions()[1] == d.F + d.H &&
         w.dimensions()[2] == GW && static_cast<int64_t>(bias.element_count()) == d.G * GW;
}

// n rounded up to a whole number of vectors
inline int64_t padded(int64_t n) { return (n + L - 1) / L * L; }

// Sets fw's head from wd [H, FP] and bd [FP] for FO outputs; false when they do not have those shapes.
bool set_head(Forward& fw, F32& wd, F32& bd, int64_t H, int64_t FO) {
  fw.FO = FO;
  fw.FP = padded(FO);
  fw.wd = wd.typed_data();
  fw.bd = bd.typed_data();
  return wd.dimensions().size() == 2 && wd.dimensions()[0] == H && wd.dimensions()[1] == fw.FP &&
         static_cast<int64_t>(bd.element_count()) == fw.FP;
}

ffi::Error invalid(const char* name, const char* what) {
  return ffi::Error::InvalidArgument(std::string(name) + ": " + what + " of the wrong shape");
}

// `fw`: its cell, head and closed-loop fields (a closed loop also sets its steps T: xs holds its first input
// only). c0 and c: the LSTM's cell state (null for a GRU).
ffi::Error forward(const char* name, F32& xs, F32& w, F32& bias, F32& h0, const float* c0, float* ys, float* cs,
                   float* h, float* c, bool batch_major, int64_t threads, Forward fw = {}) {
  Dims d;
  if (!dims_of(xs, w, bias, h0, d)) return invalid(name, "packed weights");
  fw.T = fw.wf ? fw.T : d.T;
  fw.B = d.B;
  fw.F = d.F;
  fw.H = d.H;
  fw.G = d.G;
  fw.batch_major = batch_major;
  fw.threads = static_cast<int>(threads);
  fw.xs = xs.typed_data();
  fw.w = w.typed_data();
  fw.bias = bias.typed_data();
  fw.ys = ys;
  fw.cs = cs;
  fw.h = h;
  fw.c = c;
  std::memcpy(h, h0.typed_data(), fw.B * fw.H * sizeof(float));
  if (c) std::memcpy(c, c0, fw.B * fw.H * sizeof(float));
  Scratch hbuf(2 * fw.B * fw.H);
  fw.hbuf = hbuf.data();
  fw.run();
  return ffi::Error::Success();
}

Forward gru_cell() {
  Forward fw{};
  fw.gru = true;
  return fw;
}

// An LSTM's evaluation or closed loop, by Strassen's product where `strassen` and it applies
Forward lstm_eval(bool strassen) {
  Forward fw{};
  fw.strassen = strassen;
  return fw;
}

ffi::Error LstmForwardImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 c0, Out ys, Out h, Out c, bool batch_major,
                           int64_t threads, bool strassen) {
  return forward("seqjax_lstm_forward", xs, w, bias, h0, c0.typed_data(), ys->typed_data(), nullptr,
                 h->typed_data(), c->typed_data(), batch_major, threads, lstm_eval(strassen));
}

ffi::Error GruForwardImpl(F32 xs, F32 w, F32 bias, F32 h0, Out ys, Out h, bool batch_major, int64_t threads) {
  return forward("seqjax_gru_forward", xs, w, bias, h0, nullptr, ys->typed_data(), nullptr, h->typed_data(),
                 nullptr, batch_major, threads, gru_cell());
}

// The forward pass with an affine head inside: ys [B, T, FO] (batch_major) or [T, B, FO] of the head's outputs.
// cs (or null): training's, with head.hs.
ffi::Error forward_head(const char* name, F32& xs, F32& w, F32& bias, F32& h0, const float* c0, F32& wd, F32& bd,
                        Out& ys, float* cs, float* h, float* c, bool batch_major, int64_t threads, Forward head) {
  if (!set_head(head, wd, bd, h0.dimensions()[1], ys->dimensions()[2])) return invalid(name, "head weights");
  return forward(name, xs, w, bias, h0, c0, ys->typed_data(), cs, h, c, batch_major, threads, head);
}

ffi::Error LstmForwardHeadImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 c0, F32 wd, F32 bd, Out ys, Out h, Out c,
                               bool batch_major, int64_t threads, bool strassen) {
  return forward_head("seqjax_lstm_forward_head", xs, w, bias, h0, c0.typed_data(), wd, bd, ys, nullptr,
                      h->typed_data(), c->typed_data(), batch_major, threads, lstm_eval(strassen));
}

ffi::Error GruForwardHeadImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 wd, F32 bd, Out ys, Out h, bool batch_major,
                              int64_t threads) {
  return forward_head("seqjax_gru_forward_head", xs, w, bias, h0, nullptr, wd, bd, ys, nullptr, h->typed_data(),
                      nullptr, batch_major, threads, gru_cell());
}

// Training's forward pass with the head inside: ys of the head's outputs, hs and cs (LSTM) every step's h and c.
ffi::Error GruForwardTrainHeadImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 wd, F32 bd, Out ys, Out hs, Out h,
                                   bool batch_major, int64_t threads) {
  Forward fw = gru_cell();
  fw.hs = hs->typed_data();
  return forward_head("seqjax_gru_forward_train_head", xs, w, bias, h0, nullptr, wd, bd, ys, nullptr,
                      h->typed_data(), nullptr, batch_major, threads, fw);
}

// Whether zs holds every step's gates (keep_gates: T * B rows of G * 64) or nothing.
bool gates_fit(F32& xs, F32& w, int64_t zs_count, bool keep_gates) {
  const int64_t rows = xs.dimensions()[0] * xs.dimensions()[1];
  return zs_count == (keep_gates ? rows * w.dimensions()[0] * GW : 0);
}

ffi::Error LstmForwardTrainImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 c0, Out ys, Out cs, Out zs, Out h, Out c,
                                bool batch_major, bool keep_gates, int64_t threads) {
  const char* name = "seqjax_lstm_forward_train";
  if (!gates_fit(xs, w, static_cast<int64_t>(zs->element_count()), keep_gates)) return invalid(name, "gates");
  Forward fw{};
  fw.zs = keep_gates ? zs->typed_data() : nullptr;
  return forward(name, xs, w, bias, h0, c0.typed_data(), ys->typed_data(), cs->typed_data(), h->typed_data(),
                 c->typed_data(), batch_major, threads, fw);
}

ffi::Error LstmForwardTrainHeadImpl(F32 xs, F32 w, F32 bias, F32 h0, F32 c0, F32 wd, F32 bd, Out ys, Out hs, Out cs,
                                    Out zs, Out h, Out c, bool batch_major, bool keep_gates, int64_t threads) {
  const char* name = "seqjax_lstm_forward_train_head";
  if (!gates_fit(xs, w, static_cast<int64_t>(zs->element_count()), keep_gates)) return invalid(name, "gates");
  Forward fw{};
  fw.zs = keep_gates ? zs->typed_data() : nullptr;
  fw.hs = hs->typed_data();
  return forward_head(name, xs, w, bias, h0, c0.typed_data(), wd, bd, ys, cs->typed_data(), h->typed_data(),
                      c->typed_data(), batch_major, threads, fw);
}

// `bw`: its cell. c0, cs, dc_end, dc0: the LSTM's (null for a GRU).
ffi::Error backward(const char* name, F32& xs, F32& w, F32& wt, F32& bias, F32& h0, const float* c0, F32& ys,
                    const float* cs, const float* dys, F32& dh_end, const float* dc_end, Out& dxs, Out& dw, Out& db, Out& dh0,
                    float* dc0, bool batch_major, int64_t threads, Backward bw = {}) {
  Dims d;
  if (!dims_of(xs, w, bias, h0, d)) return invalid(name, "packed weights");
  bw.T = d.T;
  bw.B = d.B;
  bw.F = d.F;
  bw.H = d.H;
  bw.G = d.G;
  bw.NP = bw.G * U + padded(bw.F);
  if (wt.dimensions().size() != 2 || wt.dimensions()[0] != bw.G * GW || wt.dimensions()[1] != bw.NP)
    return invalid(name, "transposed weights");
  bw.batch_major = batch_major;
  bw.threads = static_cast<int>(threads);
  bw.xs = xs.typed_data();
  bw.w = w.typed_data();
  bw.wt = wt.typed_data();
  bw.bias = bias.typed_data();
  bw.h0 = h0.typed_data();
  bw.c0 = c0;
  bw.ys = ys.typed_data();
  bw.cs = cs;
  bw.dys = dys;
  bw.dxs = dxs->typed_data();
  bw.dw = dw->typed_data();
  bw.db = db->typed_data();
  bw.dh = dh0->typed_data();
  bw.dc = dc0;
  std::memcpy(bw.dh, dh_end.typed_data(), bw.B * bw.H * sizeof(float));
  if (dc0) std::memcpy(bw.dc, dc_end, bw.B * bw.H * sizeof(float));
  Scratch dzbuf(2 * bw.B * bw.G * GW);
  bw.dzbuf = dzbuf.data();
  bw.run();
  return ffi::Error::Success();
}

ffi::Error LstmBackwardImpl(F32 xs, F32 w, F32 wt, F32 bias, F32 h0, F32 c0, F32 ys, F32 cs, F32 zs, F32 dys,
                            F32 dh_end, F32 dc_end, Out dxs, Out dw, Out db, Out dh0, Out dc0, bool batch_major,
                            bool keep_gates, int64_t threads) {
  const char* name = "seqjax_lstm_backward";
  if (!gates_fit(xs, w, static_cast<int64_t>(zs.element_count()), keep_gates)) return invalid(name, "gates");
  Backward bw{};
  bw.zs = keep_gates ? zs.typed_data() : nullptr;
  return backward(name, xs, w, wt, bias, h0, c0.typed_data(), ys, cs.typed_data(), dys.typed_data(), dh_end,
                  dc_end.typed_data(), dxs, dw, db, dh0, dc0->typed_data(), batch_major, threads, bw);
}

// Sets bw's head gradient from dout (rows laid out as ys, FP columns: a multiple of 16, zeros past FO), wdt [FO,
// G * 16] and dwd [G * 16, FP]; false when they do not have those shapes.
bool set_head_grads(Backward& bw, F32& xs, F32& h0, F32& dout, F32& wdt, Out& dwd) {
  auto dd = dout.dimensions(), wd = wdt.dimensions(), gd = dwd->dimensions();
  const int64_t GU = (h0.dimensions()[1] + U - 1) / U * U, rows = xs.dimensions()[0] * xs.dimensions()[1];
  if (dd.size() != 3 || wd.size() != 2 || gd.size() != 2) return false;
  bw.FO = wd[0];
  bw.FP = dd[2];
  bw.dout = dout.typed_data();
  bw.wdt = wdt.typed_data();
  bw.dwd = dwd->typed_data();
  return bw.FP % L == 0 && bw.FO <= bw.FP && dd[0] * dd[1] == rows && wd[1] == GU && gd[0] == GU && gd[1] == bw.FP;
}

ffi::Error LstmBackwardHeadImpl(F32 xs, F32 w, F32 wt, F32 bias, F32 h0, F32 c0, F32 hs, F32 cs, F32 zs, F32 dout,
                                F32 wdt, F32 dh_end, F32 dc_end, Out dxs, Out dw, Out db, Out dwd, Out dh0, Out dc0,
                                bool batch_major, bool keep_gates, int64_t threads) {
  const char* name = "seqjax_lstm_backward_head";
  if (!gates_fit(xs, w, static_cast<int64_t>(zs.element_count()), keep_gates)) return invalid(name, "gates");
  Backward bw{};
  bw.zs = keep_gates ? zs.typed_data() : nullptr;
  if (!set_head_grads(bw, xs, h0, dout, wdt, dwd)) return invalid(name, "head gradients");
  return backward(name, xs, w, wt, bias, h0, c0.typed_data(), hs, cs.typed_data(), nullptr, dh_end,
                  dc_end.typed_data(), dxs, dw, db, dh0, dc0->typed_data(), batch_major, threads, bw);
}

ffi::Error GruBackwardImpl(F32 xs, F32 w, F32 wt, F32 bias, F32 h0, F32 ys, F32 dys, F32 dh_end, Out dxs, Out dw,
                           Out db, Out dh0, bool batch_major, int64_t threads) {
  Backward bw{};
  bw.gru = true;
  return backward("seqjax_gru_backward", xs, w, wt, bias, h0, nullptr, ys, nullptr, dys.typed_data(), dh_end,
                  nullptr, dxs, dw, db, dh0, nullptr, batch_major, threads, bw);
}

ffi::Error GruBackwardHeadImpl(F32 xs, F32 w, F32 wt, F32 bias, F32 h0, F32 hs, F32 dout, F32 wdt, F32 dh_end,
                               Out dxs, Out dw, Out db, Out dwd, Out dh0, bool batch_major, int64_t threads) {
  const char* name = "seqjax_gru_backward_head";
  Backward bw{};
  bw.gru = true;
  if (!set_head_grads(bw, xs, h0, dout, wdt, dwd)) return invalid(name, "head gradients");
  return backward(name, xs, w, wt, bias, h0, nullptr, hs, nullptr, nullptr, dh_end, nullptr, dxs, dw, db, dh0,
                  nullptr, batch_major, threads, bw);
}

// The closed loop of `Forward`: x0 [1, B, F] (its first input as a sequence of one step), ys [B, S, F]; `loop`:
// its cell.
ffi::Error closed_loop(const char* name, F32& x0, F32& w, F32& bias, F32& h0, const float* c0, F32& wf, F32& biasf,
                       F32& wd, F32& bd, Out& ys, float* h, float* c, int64_t threads, Forward loop) {
  auto xd = x0.dimensions(), yd = ys->dimensions();
  const int64_t H = h0.dimensions()[1], G = (H + U - 1) / U;
  if (xd.size() != 3 || xd[0] != 1 || yd.size() != 3 || yd[0] != xd[1] || yd[2] != xd[2])
    return invalid(name, "first input or outputs");
  loop.T = yd[1];
  if (!set_head(loop, wd, bd, H, xd[2])) return invalid(name, "head weights");
  if (wf.dimensions().size() != 3 || wf.dimensions()[0] != G || wf.dimensions()[1] != H ||
      wf.dimensions()[2] != GW || static_cast<int64_t>(biasf.element_count()) != G * GW)
    return invalid(name, "folded weights");
  loop.wf = wf.typed_data();
  loop.biasf = biasf.typed_data();
  return forward(name, x0, w, bias, h0, c0, ys->typed_data(), nullptr, h, c, true, threads, loop);
}

ffi::Error LstmClosedLoopImpl(F32 x0, F32 w, F32 bias, F32 h0, F32 c0, F32 wf, F32 biasf, F32 wd, F32 bd, Out ys,
                              Out h, Out c, int64_t threads, bool strassen) {
  return closed_loop("seqjax_lstm_closed_loop", x0, w, bias, h0, c0.typed_data(), wf, biasf, wd, bd, ys,
                     h->typed_data(), c->typed_data(), threads, lstm_eval(strassen));
}

ffi::Error GruClosedLoopImpl(F32 x0, F32 w, F32 bias, F32 h0, F32 wf, F32 biasf, F32 wd, F32 bd, Out ys, Out h,
                             int64_t threads) {
  return closed_loop("seqjax_gru_closed_loop", x0, w, bias, h0, nullptr, wf, biasf, wd, bd, ys, h->typed_data(),
                     nullptr, threads, gru_cell());
}

// ---- stacked closed loop ---------------------------------------------------------------------------------
// `seqjax_stack_closed_loop`: a stack of LSTM and GRU layers and an affine head in closed loop (`chain(lstm,
// lstm, .., dense)` in `sj.rollout`): at step t layer 0 takes x_t, layer l > 0 the h_t of layer l - 1, the head
// forms y_t = h_t wd + bd from the top layer's h_t, and x_{t+1} = y_t. After the first step the fed-back input's
// projection is folded into layer 0's input weights, x_{t+1} w_x = h_t^top (wd w_x) + bd w_x: layer 0 then takes
// the top layer's h_{t-1} as its input, on wf ([G0, H_top + H0, 64], packed [wd w_x; w_h]) and biasf, and y_t
// stays off the recurrence. Split over threads by units, meeting after each layer's step (`Stack::run`).
struct StackLayer {
  int64_t F, H, G;        // F: the width of its input (x's for layer 0's first step, else the layer below's H)
  const float *w, *bias;  // packed [G, F + H, 64] and [G * 64]
  float* c;               // the LSTM's cell state [B, H], updated in place (null: a GRU)
  float* hbuf;            // [2, B, H]: h before step t in slot t % 2
  bool gru;
};

struct Stack {
  int64_t T, B, FO, FP;  // steps, rows, the head's outputs (= x's features) and their padded width
  std::vector<StackLayer> layers;
  const float *x0, *wf, *biasf, *wd, *bd;
  float* ys;  // [B, T, FO]
  int threads;

  // step t of layer l, rows b0..b0+MR-1 of group g
  template <int MR>
  void rows(size_t l, int64_t t, int64_t g, int64_t b0) const {
    const StackLayer& ly = layers[l];
    const float* h_prev = ly.hbuf + (t % 2) * B * ly.H;
    float* h_next = ly.hbuf + ((t + 1) % 2) * B * ly.H;
    int64_t F = ly.F;
    const float *x, *w = ly.w, *bias = ly.bias;
    if (l > 0) {
      x = layers[l - 1].hbuf + ((t + 1) % 2) * B * F + b0 * F;  // the layer below's h_t
    } else if (t == 0) {
      x = x0 + b0 * F;
    } else {  // the top layer's h_{t-1}, on the folded weights
      const StackLayer& top = layers.back();
      F = top.H;
      x = top.hbuf + (t % 2) * B * F + b0 * F;
      w = wf;
      bias = biasf;
    }
    auto none = [](int64_t, vf, vf) {};
    if (ly.gru)
      gru_rows<MR>(F, ly.H, x, h_prev, w, bias, h_next, g, b0, false, none);
    else
      cell_rows<MR>(F, ly.H, x, h_prev, w, bias, ly.c, h_next, g, b0, none, nullptr, 0);
  }
  void cells(size_t l, int64_t t, int64_t g0, int64_t g1, int64_t r0, int64_t r1) const {
    for (int64_t g = g0; g < g1; ++g)
      by_rows(r1 - r0, [&](auto mr, int64_t b) { rows<mr.value>(l, t, g, r0 + b); });
  }
  // y_t of the rows r0..r1-1 (every unit of the top layer's h_t formed)
  void head(int64_t t, int64_t r0, int64_t r1) const {
    const StackLayer& top = layers.back();
    by_rows(r1 - r0, [&](auto mr, int64_t b) {
      head_rows<mr.value>(top.H, FP, FO, top.hbuf + ((t + 1) % 2) * B * top.H, r0 + b, wd, bd,
                          [&](int64_t row, int64_t col, vf y, int valid) {
                            store_part(ys + (row * T + t) * FO + col, y, valid);
                          });
    });
  }
  // By units: each thread owns a share of every layer's groups (its share of the weights stays in its core's
  // caches) and the threads meet after each layer's step. Split by chunks of rows instead, each thread streams
  // every layer's weights through its cache every step: measured 5-25% slower at every size the plan runs
  // this kernel (two LSTM layers, 200 steps, ms: B 64 H 128 43-46 vs 39-46; B 128 H 128 86 vs 74; B 32 H 128
  // 25 vs 20; B 256 H 64 48 vs 45).
  void run() {
    advise_huge_pages(ys, T * B * FO * sizeof(float));
    Pool& pool = Pool::get();
    const int n = std::min(threads > 0 ? threads : pool.max_threads(), pool.max_threads());
    int64_t groups = layers[0].G;  // the fewest groups of a layer: every thread owns at least one of each
    for (const StackLayer& ly : layers) groups = std::min(groups, ly.G);
    const int m0 = static_cast<int>(std::min<int64_t>(n, groups));
    SpinBarrier barrier(m0);
    pool.run(m0, [&](int id, int m) {  // m: m0, or 1 when the workers are busy
      const int64_t r0 = B * id / m, r1 = B * (id + 1) / m;  // the rows whose outputs this thread forms
      for (int64_t t = 0; t < T; ++t) {
        for (size_t l = 0; l < layers.size(); ++l) {
          cells(l, t, layers[l].G * id / m, layers[l].G * (id + 1) / m, 0, B);
          if (m > 1) barrier.wait();
        }
        head(t, r0, r1);
      }
    });
  }
};

// Arguments x0 [1, B, F], wf, biasf, wd, bd, then each layer's w, bias, h0 (and c0: LSTM); results ys [B, S, F],
// then each layer's h (and c). `gru`: per layer, 1 for a GRU, 0 for an LSTM.
ffi::Error StackClosedLoopImpl(F32 x0, F32 wf, F32 biasf, F32 wd, F32 bd, ffi::RemainingArgs args, Out ys,
                               ffi::RemainingRets rets, ffi::Span<const int64_t> gru, int64_t threads) {
  const char* name = "seqjax_stack_closed_loop";
  auto xd = x0.dimensions(), yd = ys->dimensions();
  if (xd.size() != 3 || xd[0] != 1 || yd.size() != 3 || yd[0] != xd[1] || yd[2] != xd[2])
    return invalid(name, "first input or outputs");
  Stack st{yd[1], xd[1], xd[2], padded(xd[2]), {}, x0.typed_data(), wf.typed_data(), biasf.typed_data(),
           wd.typed_data(), bd.typed_data(), ys->typed_data(), static_cast<int>(threads)};
  const size_t count = gru.size();
  size_t arg = 0, ret = 0;
  for (size_t i = 0; i < count; ++i) arg += gru[i] ? 3 : 4, ret += gru[i] ? 1 : 2;
  if (count < 2 || args.size() != arg || rets.size() != ret) return invalid(name, "layers");
  std::vector<Scratch> hbufs(count);
  std::vector<std::pair<float*, const float*>> finals;  // each layer's h result and where its final h is
  arg = ret = 0;
  for (size_t l = 0; l < count; ++l) {
    auto w = args.get<F32>(arg++), bias = args.get<F32>(arg++), h0 = args.get<F32>(arg++);
    auto h = rets.get<F32>(ret++);
    if (!w.has_value() || !bias.has_value() || !h0.has_value() || !h.has_value()) return invalid(name, "layers");
    if (h0->dimensions().size() != 2 || h0->dimensions()[0] != st.B) return invalid(name, "carry");
    const int64_t F = l == 0 ? st.FO : st.layers[l - 1].H, H = h0->dimensions()[1], G = (H + U - 1) / U;
    if (w->dimensions().size() != 3 || w->dimensions()[0] != G || w->dimensions()[1] != F + H ||
        w->dimensions()[2] != GW || static_cast<int64_t>(bias->element_count()) != G * GW)
      return invalid(name, "packed weights");
    hbufs[l].resize(2 * st.B * H);
    std::memcpy(hbufs[l].data(), h0->typed_data(), st.B * H * sizeof(float));
    float* c = nullptr;
    if (!gru[l]) {
      auto c0 = args.get<F32>(arg++);
      auto cr = rets.get<F32>(ret++);
      if (!c0.has_value() || !cr.has_value()) return invalid(name, "layers");
      if (static_cast<int64_t>(c0->element_count()) != st.B * H) return invalid(name, "carry");
      c = (*cr)->typed_data();
      std::memcpy(c, c0->typed_data(), st.B * H * sizeof(float));
    }
    st.layers.push_back(
        StackLayer{F, H, G, w->typed_data(), bias->typed_data(), c, hbufs[l].data(), gru[l] != 0});
    finals.emplace_back((*h)->typed_data(), hbufs[l].data() + (st.T % 2) * st.B * H);
  }
  const StackLayer &first = st.layers[0], &top = st.layers.back();
  if (wf.dimensions().size() != 3 || wf.dimensions()[0] != first.G || wf.dimensions()[1] != top.H + first.H ||
      wf.dimensions()[2] != GW || static_cast<int64_t>(biasf.element_count()) != first.G * GW)
    return invalid(name, "folded weights");
  if (wd.dimensions().size() != 2 || wd.dimensions()[0] != top.H || wd.dimensions()[1] != st.FP ||
      static_cast<int64_t>(bd.element_count()) != st.FP)
    return invalid(name, "head weights");
  st.run();
  for (size_t l = 0; l < count; ++l)
    std::memcpy(finals[l].first, finals[l].second, st.B * st.layers[l].H * sizeof(float));
  return ffi::Error::Success();
}

// A binding's first four float32 arguments (all the kernels' arguments are float32 buffers).
auto four_arguments() { return ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>(); }

}  // namespace

// The handlers XLA calls. A benchmark that includes this file for its kernels alone defines
// SEQJAX_KERNELS_WITHOUT_HANDLERS: the handlers instantiate every kernel, ~90% of the build's time.
#ifndef SEQJAX_KERNELS_WITHOUT_HANDLERS
// LSTM: arguments xs, w, bias, h0, c0; results ys, h, c
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForward, LstmForwardImpl,
                              four_arguments().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads").Attr<bool>("strassen"));

// arguments xs, w, bias, h0, c0, wd, bd; results ys (the head's), h, c
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForwardHead, LstmForwardHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads").Attr<bool>("strassen"));

// results ys, cs, zs (every step's gates with keep_gates, else empty), h, c
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForwardTrain, LstmForwardTrainImpl,
                              four_arguments().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<bool>("keep_gates").Attr<int64_t>("threads"));

// arguments xs, w, bias, h0, c0, wd, bd; results ys (the head's), hs, cs, zs (as above), h, c
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForwardTrainHead, LstmForwardTrainHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<bool>("keep_gates").Attr<int64_t>("threads"));

// arguments xs, w, wt, bias, h0, c0, ys, cs, zs, dys, dh and dc at the end; results dxs, dw, db, dh0, dc0
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmBackward, LstmBackwardImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<bool>("keep_gates").Attr<int64_t>("threads"));

// arguments xs, w, wt, bias, h0, c0, hs, cs, zs, dout (the head outputs' gradient, FP columns), wdt [FO, G * 16], dh
// and dc at the end; results dxs, dw, db, dwd [G * 16, FP], dh0, dc0
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmBackwardHead, LstmBackwardHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<bool>("keep_gates").Attr<int64_t>("threads"));

// arguments x0 [1, B, F], w, bias, h0, c0, wf, biasf, wd, bd; results ys [B, S, F], h, c
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmClosedLoop, LstmClosedLoopImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("threads").Attr<bool>("strassen"));

// GRU (`reset_after`): the same without c. Arguments xs, w, bias, h0; results ys, h (also the training forward
// pass: the backward pass needs only the outputs)
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruForward, GruForwardImpl,
                              four_arguments().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads"));

// arguments xs, w, bias, h0, wd, bd; results ys (the head's), h
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruForwardHead, GruForwardHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads"));

// arguments xs, w, bias, h0, wd, bd; results ys (the head's), hs, h
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruForwardTrainHead, GruForwardTrainHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads"));

// arguments xs, w, wt, bias, h0, ys, dys, dh at the end; results dxs, dw, db, dh0
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruBackward, GruBackwardImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads"));

// arguments x0 [1, B, F], w, bias, h0, wf, biasf, wd, bd; results ys [B, S, F], h
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruClosedLoop, GruClosedLoopImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("threads"));

// arguments xs, w, wt, bias, h0, hs, dout, wdt, dh at the end; results dxs, dw, db, dwd, dh0
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxGruBackwardHead, GruBackwardHeadImpl,
                              four_arguments().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("batch_major").Attr<int64_t>("threads"));

// arguments x0 [1, B, F], wf, biasf, wd, bd, then per layer w, bias, h0 (and c0: LSTM); results ys [B, S, F], then
// per layer h (and c); `gru`: per layer 1 (GRU) or 0 (LSTM)
XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxStackClosedLoop, StackClosedLoopImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().RemainingArgs()
                                  .Ret<F32>().RemainingRets()
                                  .Attr<ffi::Span<const int64_t>>("gru").Attr<int64_t>("threads"));
#endif  // SEQJAX_KERNELS_WITHOUT_HANDLERS

// The bytes of a native vector register the kernels were built for (64: AVX-512, 32: AVX2, 16: NEON or SSE).
extern "C" int SeqjaxVectorBytes() { return SEQJAX_VECTOR_BYTES; }
