// The machine's float32 FMA peak (`benchmarks/fma_peak.py`): threads that do nothing but independent fused
// multiply-adds on 24 vectors of the widest registers the build targets, so the FMA units, not their latency,
// are the limit. Built with `seqjax.fast.native.build_shared`, as the native kernels are.
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#if defined(__AVX512F__)
constexpr int kBytes = 64;
#elif defined(__AVX__)
constexpr int kBytes = 32;
#else
constexpr int kBytes = 16;
#endif
constexpr int kAcc = 24;  // independent accumulators: more than FMA units x their latency
typedef float vf __attribute__((vector_size(kBytes)));

static float fma_loop(long iterations) {
  vf a[kAcc];
  const vf b = vf{} + 1e-3f;
  vf c = vf{} + 0.999f;
  for (int i = 0; i < kAcc; ++i) a[i] = vf{} + static_cast<float>(i);
  for (long k = 0; k < iterations; ++k) {
#pragma GCC unroll 24
    for (int i = 0; i < kAcc; ++i) a[i] = a[i] * c + b;
#if defined(__x86_64__)
    __asm__ volatile("" : "+v"(c));  // c unknown to the compiler each iteration: the loop stays a loop
#elif defined(__aarch64__)
    __asm__ volatile("" : "+w"(c));
#endif
  }
  float s = 0;
  for (int i = 0; i < kAcc; ++i) s += a[i][0];
  return s;
}

extern "C" long seqjax_fma_flops_per_iteration() { return 2L * kAcc * (kBytes / 4); }

// Seconds for `threads` threads to run `iterations` iterations each, started together.
extern "C" double seqjax_fma_seconds(int threads, long iterations) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  std::vector<float> sink(threads);
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&, i] {
      ready.fetch_add(1);
      while (!go.load()) {
      }
      sink[i] = fma_loop(iterations);
    });
  while (ready.load() != threads) {
  }
  auto t0 = std::chrono::steady_clock::now();
  go.store(true);
  for (auto& t : pool) t.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() + 0.0 * sink[0];
}
