// The LSTM step's gate activations alone, in the kernels' code and in variants of it (`benchmarks/activations.py`):
// each timed over one register block of rows (i, f, o by the sigmoid, g and the new c by tanh, the cell update),
// and each evaluated over arrays so that its error can be measured against float64. The kernels' source is
// included (without XLA's handlers: they would build every kernel): variant 0 is their `vsigmoid` and `vtanh`.
#define SEQJAX_KERNELS_WITHOUT_HANDLERS
#include "lstm_cpu.cc"

#include <chrono>

namespace {

// one of the rational's variants, on the build's native vectors (`tanh_lanes`' coefficients and clamp)
enum class Rational { kHalvingsFolded, kReciprocal, kNoDivision };

template <int K>
constexpr float quarter_pow = 0.25f * quarter_pow<K - 1>;  // 4^-K
template <>
constexpr float quarter_pow<0> = 1.0f;

// `tanh_lanes` with its division replaced (kReciprocal, kNoDivision), or tanh(x / 2) / 2 from x with the two
// halvings moved into the clamp and the coefficients (kHalvingsFolded; powers of two round nothing, so these are the
// bits of tanh_lanes(x * 0.5) * 0.5)
template <Rational R, bool Halved, class V>
inline V rational(V x) {
  constexpr int h = Halved ? 1 : 0;
  x = clamp_lanes(x, (Halved ? 2.0f : 1.0f) * 7.90531110763549805f - V{});
  V x2 = x * x;
  V p = x2 * (-2.76076847742355e-16f * quarter_pow<7 * h>) + 2.00018790482477e-13f * quarter_pow<6 * h>;
  p = x2 * p + -8.60467152213735e-11f * quarter_pow<5 * h>;
  p = x2 * p + 5.12229709037114e-08f * quarter_pow<4 * h>;
  p = x2 * p + 1.48572235717979e-05f * quarter_pow<3 * h>;
  p = x2 * p + 6.37261928875436e-04f * quarter_pow<2 * h>;
  p = x2 * p + 4.89352455891786e-03f * quarter_pow<h>;
  p = x * p;
  V q = x2 * (1.19825839466702e-06f * quarter_pow<3 * h>) + 1.18534705686654e-04f * quarter_pow<2 * h>;
  q = x2 * q + 2.26843463243900e-03f * quarter_pow<h>;
  q = x2 * q + 4.89352518554385e-03f;
  if constexpr (R == Rational::kNoDivision) return p * q;  // wrong values: what the division costs
#if defined(__AVX512F__)
  if constexpr (R == Rational::kReciprocal && sizeof(V) == 64) {
    V r = (V)_mm512_rcp14_ps((__m512)q);
    return p * (r * (2.0f - q * r));
  }
#endif
  return p / q;
}

// an odd function from a table of N pieces of degree D over [0, N / in_scale) (coefficients from the constant up,
// tab[k * N + i]: piece i's k-th), on |x| in_scale clamped to the last piece, its sign restored: one `vpermps` (N 16)
// or `vpermt2ps` (N 32) per coefficient and no division
#if defined(__AVX512F__)
template <int N, int D>
inline __m512 pieces(__m512 x, float in_scale, const float* tab) {
  const __m512 sign = (__m512)_mm512_set1_epi32(static_cast<int>(0x80000000u));
  const __m512 y = _mm512_mul_ps(_mm512_andnot_ps(sign, x), _mm512_set1_ps(in_scale));
  const __m512 s = _mm512_min_ps(_mm512_set1_ps(N - 4e-6f), y);  // minps' second operand: a NaN stays
  const __m512 t = _mm512_reduce_ps(s, 0x0B);                    // s - trunc(s), in [0, 1)
  const __m512i piece = _mm512_cvttps_epi32(s);
  auto coefficient = [&](int k) {
    if constexpr (N == 16) return _mm512_permutexvar_ps(piece, _mm512_loadu_ps(tab + k * 16));
    return _mm512_permutex2var_ps(_mm512_loadu_ps(tab + k * 32), piece, _mm512_loadu_ps(tab + k * 32 + 16));
  };
  __m512 p = coefficient(D);
  for (int k = D - 1; k >= 0; --k) p = _mm512_fmadd_ps(p, t, coefficient(k));
  return _mm512_or_ps(p, _mm512_and_ps(sign, x));
}
#endif

float g_tanh16[7 * 16], g_half16[7 * 16], g_tanh32[6 * 32], g_half32[6 * 32];  // set by seqjax_act_tables

constexpr int kVariants = 6;
const char* const kNames[kVariants] = {
    "the kernels' (XLA's rational; sigmoid(x) = tanh(x / 2) / 2 + 1 / 2)",
    "sigmoid's halvings folded into the rational (the same bits)",
    "division by a reciprocal estimate and one Newton step",
    "no division (a multiply: wrong values, the division's cost)",
    "16 polynomial pieces of degree 6 (vpermps, no division)",
    "32 polynomial pieces of degree 5 (vpermt2ps, no division)",
};

bool available(int v) {
  if (v < 0 || v >= kVariants) return false;
#if SEQJAX_VECTOR_BYTES == 64
  return true;
#else
  return v == 0 || v == 1 || v == 3;  // the others use AVX-512 instructions on 16-lane vectors
#endif
}

// f applied to each native vector of x (a `vf` is one on AVX-512 builds, several elsewhere)
template <class F>
inline vf per_part(vf x, F f) {
#if SEQJAX_VECTOR_BYTES == 64
  return f(x);
#else
  for (int s = 0; s < kParts; ++s) x.p[s] = f(x.p[s]);
  return x;
#endif
}

template <int V>
inline vf act_tanh(vf x) {
  if constexpr (V == 0 || V == 1) return vtanh(x);
  if constexpr (V == 2) return per_part(x, [](auto p) { return rational<Rational::kReciprocal, false>(p); });
  if constexpr (V == 3) return per_part(x, [](auto p) { return rational<Rational::kNoDivision, false>(p); });
#if defined(__AVX512F__) && SEQJAX_VECTOR_BYTES == 64
  if constexpr (V == 4) return (vf)pieces<16, 6>((__m512)x, 2.0f, g_tanh16);
  if constexpr (V == 5) return (vf)pieces<32, 5>((__m512)x, 4.0f, g_tanh32);
#endif
  return x;
}

template <int V>
inline vf act_sigmoid(vf x) {
  if constexpr (V == 0) return vsigmoid(x);
  if constexpr (V == 1)
    return per_part(x, [](auto p) { return rational<Rational::kHalvingsFolded, true>(p) + 0.5f; });
  if constexpr (V == 2 || V == 3) return act_tanh<V>(x * 0.5f) * 0.5f + 0.5f;
#if defined(__AVX512F__) && SEQJAX_VECTOR_BYTES == 64
  if constexpr (V == 4) return (vf)pieces<16, 6>((__m512)x, 1.0f, g_half16) + 0.5f;
  if constexpr (V == 5) return (vf)pieces<32, 5>((__m512)x, 2.0f, g_half32) + 0.5f;
#endif
  return x;
}

constexpr int kRows = 6;     // a register block's rows, as the kernels' widest
constexpr int kBlocks = 64;  // distinct pre-activation blocks cycled through (L1-resident)

// `iterations` times the gates and cell update of kRows rows of one group (`cell_update`'s arithmetic)
template <int V>
__attribute__((noinline)) void gate_blocks(const float* z, float* c, float* h, long iterations) {
  for (long i = 0; i < iterations; ++i) {
    const float* zi = z + (i % kBlocks) * kRows * GW;
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const vf ig = act_sigmoid<V>(load(zi + r * GW)), fg = act_sigmoid<V>(load(zi + r * GW + L)),
               gg = act_tanh<V>(load(zi + r * GW + 2 * L)), og = act_sigmoid<V>(load(zi + r * GW + 3 * L));
      const vf cn = fg * load(c + r * L) + ig * gg;
      store(c + r * L, cn);
      store(h + r * L, og * act_tanh<V>(cn));
    }
  }
}

template <int V>
double seconds(long iterations) {
  std::vector<float> z(kBlocks * kRows * GW), c(kRows * L, 0.1f), h(kRows * L);
  for (size_t i = 0; i < z.size(); ++i) z[i] = static_cast<float>((i * 2654435761u) % 1000) / 250.0f - 2.0f;
  gate_blocks<V>(z.data(), c.data(), h.data(), 1000);
  const auto t0 = std::chrono::steady_clock::now();
  gate_blocks<V>(z.data(), c.data(), h.data(), iterations);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile float sink = h[0];  // the results are used
  (void)sink;
  return s;
}

template <int V>
void evaluate(bool sigmoid, const float* x, float* y, long n) {
  for (long i = 0; i < n; i += L) store(y + i, sigmoid ? act_sigmoid<V>(load(x + i)) : act_tanh<V>(load(x + i)));
}

}  // namespace

extern "C" {

int seqjax_act_variants() { return kVariants; }
const char* seqjax_act_name(int v) { return v >= 0 && v < kVariants ? kNames[v] : ""; }
int seqjax_act_available(int v) { return available(v) ? 1 : 0; }
int seqjax_act_rows() { return kRows; }
int seqjax_act_vector_bytes() { return SEQJAX_VECTOR_BYTES; }  // the build's native vectors

// The pieces' tables (tanh's; the sigmoid's are their halves): tanh16 [7, 16], tanh32 [6, 32]
void seqjax_act_tables(const float* tanh16, const float* tanh32) {
  for (int i = 0; i < 7 * 16; ++i) g_tanh16[i] = tanh16[i], g_half16[i] = 0.5f * tanh16[i];
  for (int i = 0; i < 6 * 32; ++i) g_tanh32[i] = tanh32[i], g_half32[i] = 0.5f * tanh32[i];
}

// Seconds for `iterations` register blocks of `seqjax_act_rows()` rows of one group; negative where unavailable
double seqjax_act_seconds(int v, long iterations) {
  if (!available(v)) return -1;
  switch (v) {
    case 0: return seconds<0>(iterations);
    case 1: return seconds<1>(iterations);
    case 2: return seconds<2>(iterations);
    case 3: return seconds<3>(iterations);
    case 4: return seconds<4>(iterations);
    default: return seconds<5>(iterations);
  }
}

// y = the variant's sigmoid (or tanh) of x, n a multiple of 16; returns 0 where unavailable
int seqjax_act_eval(int v, int sigmoid, const float* x, float* y, long n) {
  if (!available(v) || n % L) return 0;
  switch (v) {
    case 0: evaluate<0>(sigmoid, x, y, n); break;
    case 1: evaluate<1>(sigmoid, x, y, n); break;
    case 2: evaluate<2>(sigmoid, x, y, n); break;
    case 3: evaluate<3>(sigmoid, x, y, n); break;
    case 4: evaluate<4>(sigmoid, x, y, n); break;
    default: evaluate<5>(sigmoid, x, y, n); break;
  }
  return 1;
}
}
