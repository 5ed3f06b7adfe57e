// f32 ↔ storage type, element-wise with a grid-stride loop: weights are uploaded as f32 and narrowed on the
// device (round to nearest even); hidden states are widened to f32 before they are copied back.
template <class D>
__device__ void from_f32(const float* in, void* out_, long long n) {
  typename D::T* out = (typename D::T*)out_;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = D::store(in[i]);
}
EK_EXPORT(from_f32, (const float* in, void* out, long long n), (in, out, n))

template <class D>
__device__ void to_f32(const void* in_, float* out, long long n) {
  const typename D::T* in = (const typename D::T*)in_;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
    out[i] = D::load(in[i]);
}
EK_EXPORT(to_f32, (const void* in, float* out, long long n), (in, out, n))
