// seqjax native CPU kernel: the forward pass of one LSTM layer over a whole sequence, as an XLA FFI custom call.
//
// XLA:CPU runs a loop body's operations one after another on one core, ~0.5 us each, and a step's small
// matmul there does not use the second core; this kernel runs every step of the recurrence in one call and
// splits each step over the machine's cores by hidden units: a thread owns groups of 16 units and computes
// all four gates of its units (one [B, F + H] x [F + H, 4 * 16] matmul per group, register-blocked), the cell
// update and the outputs, then waits at a barrier for the other threads' half of `h`. Same maths as
// `sj.lstm`'s step: z = x w_x + h w_h + b, c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'),
// float32, with XLA:CPU's own rational approximation of tanh (sigmoid(x) = tanh(x / 2) / 2 + 1 / 2).
//
// Built on first use by `seqjax.fast.native` with the machine's C++ compiler (-O3 -march=native); the vector
// code uses GCC/Clang vector extensions (16 float lanes), which the compiler maps to AVX-512, AVX2 or NEON.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4)));
constexpr int L = 16;        // lanes
constexpr int U = 16;        // units per group
constexpr int GW = 4 * U;    // packed columns per group

inline vf load(const float* p) { return *reinterpret_cast<const vfu*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
inline vf splat(float x) { return x - vf{}; }  // x - 0 folds to a broadcast

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Eigen's / XLA:CPU's rational approximation of tanh (float32).
inline vf vtanh(vf x) {
  const vf c = splat(7.90531110763549805f);
  x = x > c ? c : x;
  x = x < -c ? -c : x;
  vf x2 = x * x;
  vf p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = x * p;
  vf q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  return p / q;
}
inline vf vsigmoid(vf x) { return vtanh(x * 0.5f) * 0.5f + 0.5f; }

// ---- threads -------------------------------------------------------------------------------------------
class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  void wait() {
    int gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
    } else {
      while (gen_.load(std::memory_order_acquire) == gen) cpu_relax();
    }
  }

 private:
  int n_;
  std::atomic<int> count_{0};
  std::atomic<int> gen_{0};
};

// Persistent worker threads, one per core besides the caller's (SEQJAX_NATIVE_THREADS: cores to use).
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  int max_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // f(id, n) for id in 0..n-1, f(0, n) on the caller; returns when all have returned. One call at a time
  // gets the workers: a call made while another runs (two computations executing at once) runs f(0, 1)
  // alone.
  void run(int n, const std::function<void(int, int)>& f) {
    n = std::min(n, max_threads());
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (n <= 1 || !busy.owns_lock()) {
      f(0, 1);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(m_);
      job_ = &f;
      active_ = n;
      remaining_.store(n - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    f(0, n);
    while (remaining_.load(std::memory_order_acquire) != 0) cpu_relax();
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
      int active;
      {
        std::lock_guard<std::mutex> lock(m_);
        job = job_;
        active = active_;
      }
      if (id < active) {
        (*job)(id, active);
        remaining_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex busy_;
  std::mutex m_;
  std::condition_variable cv_;
  std::atomic<int> generation_{0};
  std::atomic<int> remaining_{0};
  const std::function<void(int, int)>* job_ = nullptr;
  int active_ = 0;
  bool stop_ = false;
};

// ---- forward ---------------------------------------------------------------------------------------------
// acc[r][j] += sum_k a[r*lda + k] * w[k*GW + j*L + lane], r < MR
template <int MR>
inline void gemm_acc(int K, const float* __restrict a, int lda, const float* __restrict w, vf (&out)[MR][4]) {
  vf acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = out[r][j];
  for (int k = 0; k < K; ++k) {
    const float* wk = w + static_cast<int64_t>(k) * GW;
    vf b0 = load(wk), b1 = load(wk + L), b2 = load(wk + 2 * L), b3 = load(wk + 3 * L);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      vf x = splat(a[r * lda + k]);
      acc[r][0] += x * b0;
      acc[r][1] += x * b1;
      acc[r][2] += x * b2;
      acc[r][3] += x * b3;
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) out[r][j] = acc[r][j];
}

// One LSTM layer over time. xs [T, B, F]; w [G, F + H, 64] (packed [w_x; w_h]); bias [G * 64];
// ys [B, T, H] (batch_major) or [T, B, H]; h, c: the carry, updated in place ([B, H] each); hbuf [2, B, H] scratch.
struct Forward {
  int64_t T, B, F, H, G;
  const float *xs, *w, *bias;
  float *ys, *h, *c, *hbuf;
  bool batch_major;
  int threads;  // at most; 0: all

  template <int MR>
  void rows(int64_t t, int64_t g, int64_t b0) const {
    const float* h_prev = hbuf + (t % 2) * B * H;
    float* h_next = hbuf + ((t + 1) % 2) * B * H;
    const float* wg = w + g * (F + H) * GW;
    vf acc[MR][4];
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < 4; ++j) acc[r][j] = load(bias + g * GW + j * L);
    gemm_acc<MR>(static_cast<int>(F), xs + (t * B + b0) * F, static_cast<int>(F), wg, acc);
    gemm_acc<MR>(static_cast<int>(H), h_prev + b0 * H, static_cast<int>(H), wg + F * GW, acc);
    const int64_t u0 = g * U;
    const int valid = static_cast<int>(std::min<int64_t>(U, H - u0));
    for (int r = 0; r < MR; ++r) {
      const int64_t b = b0 + r;
      vf i = vsigmoid(acc[r][0]), f = vsigmoid(acc[r][1]), gg = vtanh(acc[r][2]), o = vsigmoid(acc[r][3]);
      float* cb = c + b * H + u0;
      float* hn = h_next + b * H + u0;
      float* y = ys + (batch_major ? b * T + t : t * B + b) * H + u0;
      if (valid == U) {
        vf cn = f * load(cb) + i * gg;
        vf hv = o * vtanh(cn);
        store(cb, cn);
        store(hn, hv);
        store(y, hv);
      } else {
        float tmp[U] = {0};
        std::memcpy(tmp, cb, valid * sizeof(float));
        vf cn = f * load(tmp) + i * gg;
        vf hv = o * vtanh(cn);
        store(tmp, cn);
        std::memcpy(cb, tmp, valid * sizeof(float));
        store(tmp, hv);
        std::memcpy(hn, tmp, valid * sizeof(float));
        std::memcpy(y, tmp, valid * sizeof(float));
      }
    }
  }

  void step(int64_t t, int64_t g_begin, int64_t g_end) const {
    constexpr int MR = 6;
    for (int64_t g = g_begin; g < g_end; ++g) {
      int64_t b = 0;
      for (; b + MR <= B; b += MR) rows<MR>(t, g, b);
      switch (B - b) {
        case 5: rows<5>(t, g, b); break;
        case 4: rows<4>(t, g, b); break;
        case 3: rows<3>(t, g, b); break;
        case 2: rows<2>(t, g, b); break;
        case 1: rows<1>(t, g, b); break;
        default: break;
      }
    }
  }

  void run() {
    std::memcpy(hbuf, h, B * H * sizeof(float));
    Pool& pool = Pool::get();
    int n = static_cast<int>(std::min<int64_t>(threads > 0 ? threads : pool.max_threads(), G));
    SpinBarrier barrier(n);
    pool.run(n, [&](int id, int m) {  // m: n, or 1 when the workers are busy with another call
      int64_t g0 = G * id / m, g1 = G * (id + 1) / m;  // the groups of units this thread owns
      for (int64_t t = 0; t < T; ++t) {
        step(t, g0, g1);
        if (m > 1) barrier.wait();
      }
    });
    std::memcpy(h, hbuf + (T % 2) * B * H, B * H * sizeof(float));
  }
};

ffi::Error LstmForwardImpl(ffi::Buffer<ffi::F32> xs, ffi::Buffer<ffi::F32> w, ffi::Buffer<ffi::F32> bias,
                           ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0, ffi::ResultBuffer<ffi::F32> ys,
                           ffi::ResultBuffer<ffi::F32> h, ffi::ResultBuffer<ffi::F32> c, bool batch_major,
                           int64_t threads) {
  auto xd = xs.dimensions();
  auto hd = h0.dimensions();
  Forward fw;
  fw.T = xd[0];
  fw.B = xd[1];
  fw.F = xd[2];
  fw.H = hd[1];
  fw.G = (fw.H + U - 1) / U;
  if (w.dimensions().size() != 3 || w.dimensions()[0] != fw.G || w.dimensions()[1] != fw.F + fw.H ||
      w.dimensions()[2] != GW || static_cast<int64_t>(bias.element_count()) != fw.G * GW)
    return ffi::Error::InvalidArgument("seqjax_lstm_forward: packed weights of the wrong shape");
  fw.batch_major = batch_major;
  fw.threads = static_cast<int>(threads);
  fw.xs = xs.typed_data();
  fw.w = w.typed_data();
  fw.bias = bias.typed_data();
  fw.ys = ys->typed_data();
  fw.h = h->typed_data();
  fw.c = c->typed_data();
  std::memcpy(fw.h, h0.typed_data(), fw.B * fw.H * sizeof(float));
  std::memcpy(fw.c, c0.typed_data(), fw.B * fw.H * sizeof(float));
  std::vector<float> hbuf(2 * fw.B * fw.H);
  fw.hbuf = hbuf.data();
  fw.run();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SeqjaxLstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<bool>("batch_major")
                                  .Attr<int64_t>("threads"));
