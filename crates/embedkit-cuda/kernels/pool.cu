// Pooling and L2 normalization in one launch: one block per sequence writes its f32 vector to `out`
// (sequences × hidden). mode: 0 mean over the sequence's tokens, 1 its first token (CLS). normalize: 0/1.
// Sums in f32.
template <class D>
__device__ void pool(const void* hidden_, const int* cu_seqlens, float* out, int hidden, int mode,
                     int normalize) {
  typedef typename D::T T;
  const T* h = (const T*)hidden_;
  const int s = blockIdx.x;
  const int start = cu_seqlens[s], len = cu_seqlens[s + 1] - start;
  const int rows = mode == 1 ? min(len, 1) : len;
  float* o = out + (long long)s * hidden;
  float sq = 0.f;
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
    float sum = 0.f;
    for (int t = 0; t < rows; ++t) sum += D::load(h[(long long)(start + t) * hidden + c]);
    const float v = rows > 0 ? sum / rows : 0.f;
    o[c] = v;
    sq += v * v;
  }
  if (!normalize) return;
  // As torch.nn.functional.normalize: divide by max(norm, 1e-12).
  const float inv = 1.f / fmaxf(sqrtf(ek_block_sum(sq)), 1e-12f);
  for (int c = threadIdx.x; c < hidden; c += blockDim.x) o[c] *= inv;
}
EK_EXPORT(pool, (const void* hidden, const int* cu_seqlens, float* out, int hidden_size, int mode, int normalize),
          (hidden, cu_seqlens, out, hidden_size, mode, normalize))
