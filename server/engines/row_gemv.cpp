// out = x @ w.T for a few rows of x (1 to 4), reading w once at memory bandwidth.
//
// Why not torch's own kernels: at one or two rows a decode step is a chain of matrix-vector
// products, bound by how fast the weights stream from memory. MKL's sgemv runs on one thread, and
// oneDNN's inner product on prepacked weights reads ~20 GB/s where the machine reads ~33
// (python bench/row_gemv.py). This loop walks one weight row at a time (one sequential stream per
// thread, which the hardware prefetcher follows best), with U independent 8-wide FMA chains per
// row of x so the adds do not wait on each other. Threads split the output columns through
// at::parallel_for, so they are torch's own OpenMP workers, not a second pool competing for the
// cores.
//
// Built with -mavx2 -mfma by row_gemv.py, only on CPUs that report both.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace {

inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  __m128 shuffled = _mm_movehdup_ps(s);
  s = _mm_add_ps(s, shuffled);
  shuffled = _mm_movehl_ps(shuffled, s);
  s = _mm_add_ss(s, shuffled);
  return _mm_cvtss_f32(s);
}

// Output columns [n0, n1) for all M rows of x.
template <int M, int U>
void columns(const float* x, const float* w, float* out, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  constexpr int64_t kBlock = 8 * U;
  const int64_t k_blocks = K - K % kBlock;
  const int64_t k_vectors = K - K % 8;
  for (int64_t n = n0; n < n1; ++n) {
    const float* row = w + n * K;
    __m256 acc[M][U];
    for (int m = 0; m < M; ++m)
      for (int u = 0; u < U; ++u) acc[m][u] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k < k_blocks; k += kBlock) {
      for (int u = 0; u < U; ++u) {
        const __m256 wv = _mm256_loadu_ps(row + k + 8 * u);
        for (int m = 0; m < M; ++m)
          acc[m][u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k + 8 * u), wv, acc[m][u]);
      }
    }
    for (; k < k_vectors; k += 8) {
      const __m256 wv = _mm256_loadu_ps(row + k);
      for (int m = 0; m < M; ++m) acc[m][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + m * K + k), wv, acc[m][0]);
    }
    for (int m = 0; m < M; ++m) {
      __m256 total = acc[m][0];
      for (int u = 1; u < U; ++u) total = _mm256_add_ps(total, acc[m][u]);
      float sum = horizontal_sum(total);
      for (int64_t j = k_vectors; j < K; ++j) sum += x[m * K + j] * row[j];
      out[m * N + n] = sum;
    }
  }
}

template <int M, int U>
void product(const float* x, const float* w, float* out, int64_t K, int64_t N) {
  // At least 64 columns a thread: below that, waking a second thread costs more than it saves.
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) { columns<M, U>(x, w, out, K, N, begin, end); });
}

}  // namespace

at::Tensor row_gemv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2, "row_gemv: x and w must be 2-D");
  TORCH_CHECK(x.size(1) == w.size(1), "row_gemv: x has ", x.size(1), " columns, w ", w.size(1));
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, "row_gemv: float32 only");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "row_gemv: CPU tensors only");
  TORCH_CHECK(w.is_contiguous(), "row_gemv: w must be contiguous");
  const at::Tensor xc = x.contiguous();
  const int64_t M = xc.size(0), K = xc.size(1), N = w.size(0);
  TORCH_CHECK(M >= 1 && M <= 4, "row_gemv: 1 to 4 rows, got ", M);
  at::Tensor out = at::empty({M, N}, xc.options());
  const float* xp = xc.data_ptr<float>();
  const float* wp = w.data_ptr<float>();
  float* op = out.data_ptr<float>();
  // U per row count: the fastest of 1, 2 and 4 measured on an AVX2 EPYC while writing this.
  switch (M) {
    case 1: product<1, 2>(xp, wp, op, K, N); break;
    case 2: product<2, 4>(xp, wp, op, K, N); break;
    case 3: product<3, 2>(xp, wp, op, K, N); break;
    default: product<4, 2>(xp, wp, op, K, N); break;
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("row_gemv", &row_gemv, "x @ w.T for 1 to 4 rows of float32 x, w read once at bandwidth");
}
