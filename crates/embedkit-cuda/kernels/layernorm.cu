// Residual + LayerNorm: out = LayerNorm(x + residual), statistics in f32. One block per token. `out` may be
// neither input (each block reads its whole row before writing, but the host keeps them apart anyway).
template <class D>
__device__ void add_ln(const void* x_, const void* residual_, const float* gamma, const float* beta, void* out_,
                       int hidden, float eps) {
  typedef typename D::T T;
  const long long row = (long long)blockIdx.x * hidden;
  const T* x = (const T*)x_ + row;
  const T* residual = (const T*)residual_ + row;
  float v[EK_MAX_PER_THREAD];
#pragma unroll
  for (int k = 0; k < EK_MAX_PER_THREAD; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    v[k] = c < hidden ? D::load(x[c]) + D::load(residual[c]) : 0.f;
  }
  ek_layer_norm_row<D>(v, gamma, beta, (T*)out_ + row, hidden, eps);
}
EK_EXPORT(add_ln,
          (const void* x, const void* residual, const float* gamma, const float* beta, void* out, int hidden,
           float eps),
          (x, residual, gamma, beta, out, hidden, eps))
