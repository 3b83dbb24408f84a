// The native kernels alone, without XLA (`benchmarks/kernel_builds.py`): one build of the kernels' source (a
// compiler and its flags) per executable, so that builds can be timed side by side in alternating processes.
// SEQJAX_KERNEL_SOURCE (a -D flag): the kernels' source file, included without XLA's handlers (which would build
// every kernel, ~90% of the build's time).
//
// kernel_builds REPS THREADS SHAPE...: SHAPE is TASK:CELL:B:F:H:T[:PRODUCT], TASK `forward` (T steps of inputs,
// every h written, no head) or `closed_loop` (T steps fed back through an F-output dense head: the folded recurrence
// of `seqjax_lstm_closed_loop`), CELL `lstm` or `gru`, PRODUCT `plain` (the default) or `strassen` (LSTM: the
// recurrent products by Strassen's, where the kernel takes it, as `Plan.native_strassen` asks); THREADS 0: all. For
// each shape, one untimed call and REPS timed ones; prints `SHAPE median_ms min_ms checksum` (the checksum: the sum
// of the outputs).
#define SEQJAX_KERNELS_WITHOUT_HANDLERS
#include SEQJAX_KERNEL_SOURCE

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

// The buffers XLA:CPU hands the kernels start at 64-byte boundaries; so do these.
template <class T>
struct XlaAligned {
  using value_type = T;
  XlaAligned() = default;
  template <class U>
  XlaAligned(const XlaAligned<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
  template <class U>
  bool operator==(const XlaAligned<U>&) const { return true; }
  template <class U>
  bool operator!=(const XlaAligned<U>&) const { return false; }
};
using Buffer = std::vector<float, XlaAligned<float>>;
#ifdef SEQJAX_SCRATCH_SKEW  // the scratch the handlers allocate: the kernels' own type, or a plain vector before it
using HandlerScratch = Scratch;
#else
using HandlerScratch = std::vector<float>;
#endif

struct Shape {
  std::string text, task, cell;
  int64_t B, F, H, T;
  bool strassen;
};

bool parse(const std::string& text, Shape& s) {
  std::stringstream in(text);
  std::string part;
  std::vector<std::string> parts;
  while (std::getline(in, part, ':')) parts.push_back(part);
  if (parts.size() != 6 && parts.size() != 7) return false;
  const std::string product = parts.size() == 7 ? parts[6] : "plain";
  s = Shape{text, parts[0], parts[1], std::atoll(parts[2].c_str()), std::atoll(parts[3].c_str()),
            std::atoll(parts[4].c_str()), std::atoll(parts[5].c_str()), product == "strassen"};
  return (s.task == "forward" || s.task == "closed_loop") && (s.cell == "lstm" || s.cell == "gru") && s.B > 0 &&
         s.F > 0 && s.H > 0 && s.T > 0 && (product == "plain" || (product == "strassen" && s.cell == "lstm"));
}

// median and min of REPS timed calls (ms) and the outputs' sum
void run(const Shape& s, int reps, int threads) {
  const int64_t G = (s.H + U - 1) / U, FP = padded(s.F);
  const bool closed = s.task == "closed_loop";
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> uniform(-0.3f, 0.3f);
  auto random = [&](int64_t n) {
    Buffer v(n);
    for (float& x : v) x = uniform(rng);
    return v;
  };
  // random stand-ins for the packed weights: the kernels' cost does not depend on their values
  const auto w = random(G * (s.F + s.H) * GW), bias = random(G * GW), wf = random(G * s.H * GW),
             biasf = random(G * GW), wd = random(s.H * FP), bd = random(FP);
  const auto xs = random((closed ? 1 : s.T) * s.B * s.F);
  Buffer ys(s.T * s.B * (closed ? s.F : s.H)), h(s.B * s.H), c(s.B * s.H);
  HandlerScratch hbuf(2 * s.B * s.H);
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    Forward fw{};
    fw.T = s.T, fw.B = s.B, fw.F = s.F, fw.H = s.H, fw.G = G;
    fw.xs = xs.data(), fw.w = w.data(), fw.bias = bias.data();
    fw.ys = ys.data(), fw.h = h.data(), fw.c = s.cell == "lstm" ? c.data() : nullptr, fw.hbuf = hbuf.data();
    fw.batch_major = true;
    fw.threads = threads;
    fw.gru = s.cell == "gru";
    fw.strassen = s.strassen;
    if (closed) {
      fw.wd = wd.data(), fw.bd = bd.data(), fw.FO = s.F, fw.FP = FP;
      fw.wf = wf.data(), fw.biasf = biasf.data();
    }
    std::fill(h.begin(), h.end(), 0.0f);
    std::fill(c.begin(), c.end(), 0.0f);
    const auto start = std::chrono::steady_clock::now();
    fw.run();
    const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (r > 0) ms.push_back(elapsed);
  }
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (float y : ys) sum += y;
  std::printf("%s %.4f %.4f %.9g\n", s.text.c_str(), ms[ms.size() / 2], ms[0], sum);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s REPS THREADS TASK:CELL:B:F:H:T...\n", argv[0]);
    return 2;
  }
  const int reps = std::atoi(argv[1]), threads = std::atoi(argv[2]);
  std::vector<Shape> shapes(argc - 3);
  for (int i = 3; i < argc; ++i)
    if (!parse(argv[i], shapes[i - 3])) {
      std::fprintf(stderr, "%s: bad shape %s (want TASK:CELL:B:F:H:T[:plain|:strassen], strassen for lstm only)\n",
                   argv[0], argv[i]);
      return 2;
    }
  if (reps < 1) {
    std::fprintf(stderr, "%s: REPS must be at least 1\n", argv[0]);
    return 2;
  }
  for (const Shape& s : shapes) run(s, reps, threads);
  return 0;
}
