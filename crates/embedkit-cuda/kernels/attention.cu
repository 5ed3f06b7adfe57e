// Unpadded (varlen) self-attention. `qkv` is tokens × 3·hidden (Q, K, V side by side, heads contiguous
// inside each), sequences back to back with boundaries in `cu_seqlens`. Grid: (query tiles of
// EK_ATT_WARPS rows, heads, sequences); block: EK_ATT_WARPS warps, one query row each. Keys and values are
// staged through shared memory EK_ATT_KT at a time; each lane scores one key of the tile, and the softmax is
// online (running max and sum, rescaled per tile), all in f32. `key_lens` (nullable) limits the keys a
// sequence attends to; `rel_bias` (nullable, MPNet) is [heads][bias_span] f32, indexed by key − query +
// (bias_span − 1) / 2 — the relative position buckets are resolved on the host, in the same f32 arithmetic
// as the CPU backend. Head dimensions up to EK_MAX_HEAD_DIM.
#define EK_ATT_WARPS 4
#define EK_ATT_KT 32
#define EK_MAX_HEAD_DIM 128

template <class D>
__device__ void attention(const void* qkv_, const int* cu_seqlens, const int* key_lens, const float* rel_bias,
                          int bias_span, void* ctx_, int heads, int head_dim, float scale) {
  typedef typename D::T T;
  const T* qkv = (const T*)qkv_;
  T* ctx = (T*)ctx_;
  __shared__ float qs[EK_ATT_WARPS][EK_MAX_HEAD_DIM];
  __shared__ float ks[EK_ATT_KT][EK_MAX_HEAD_DIM + 1];  // +1: lanes reading one column each hit distinct banks
  __shared__ float vs[EK_ATT_KT][EK_MAX_HEAD_DIM];
  const int s = blockIdx.z, head = blockIdx.y;
  const int start = cu_seqlens[s], len = cu_seqlens[s + 1] - start;
  const int q0 = blockIdx.x * EK_ATT_WARPS;
  if (q0 >= len) return;  // uniform over the block: grids are sized for the longest sequence
  const int keys = key_lens ? key_lens[s] : len;
  const int hidden = heads * head_dim;
  const long long row = 3LL * hidden;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int qi = q0 + warp;
  const bool active = qi < len;
  if (active)
    for (int d = lane; d < head_dim; d += 32)
      qs[warp][d] = D::load(qkv[(start + qi) * row + head * head_dim + d]) * scale;
  float m = EK_NEG_INF, l = 0.f;
  float acc[EK_MAX_HEAD_DIM / 32];
#pragma unroll
  for (int e = 0; e < EK_MAX_HEAD_DIM / 32; ++e) acc[e] = 0.f;
  for (int k0 = 0; k0 < keys; k0 += EK_ATT_KT) {
    const int n = min(EK_ATT_KT, keys - k0);
    __syncthreads();  // the previous tile is consumed (and qs is written, on the first pass)
    for (int i = threadIdx.x; i < n * head_dim; i += blockDim.x) {
      const int j = i / head_dim, d = i - j * head_dim;
      const long long base = (start + k0 + j) * row + head * head_dim + d;
      ks[j][d] = D::load(qkv[base + hidden]);
      vs[j][d] = D::load(qkv[base + 2 * hidden]);
    }
    __syncthreads();
    if (!active) continue;
    float score = EK_NEG_INF;
    if (lane < n) {
      float dot = 0.f;
      for (int d = 0; d < head_dim; ++d) dot += qs[warp][d] * ks[lane][d];
      if (rel_bias) dot += rel_bias[head * bias_span + (k0 + lane - qi) + (bias_span - 1) / 2];
      score = dot;
    }
    const float m_new = fmaxf(m, ek_warp_max(score));
    const float p = lane < n ? expf(score - m_new) : 0.f;
    const float correction = expf(m - m_new);  // 0 on the first tile (m = -inf)
    l = l * correction + ek_warp_sum(p);
#pragma unroll
    for (int e = 0; e < EK_MAX_HEAD_DIM / 32; ++e) acc[e] *= correction;
    for (int j = 0; j < n; ++j) {
      const float pj = __shfl_sync(EK_FULL_MASK, p, j);
#pragma unroll
      for (int e = 0; e < EK_MAX_HEAD_DIM / 32; ++e) {
        const int d = lane + 32 * e;
        if (d < head_dim) acc[e] += pj * vs[j][d];
      }
    }
    m = m_new;
  }
  if (!active) return;
  const float inv = 1.f / l;
#pragma unroll
  for (int e = 0; e < EK_MAX_HEAD_DIM / 32; ++e) {
    const int d = lane + 32 * e;
    if (d < head_dim) ctx[(start + qi) * (long long)hidden + head * head_dim + d] = D::store(acc[e] * inv);
  }
}
EK_EXPORT(attention,
          (const void* qkv, const int* cu_seqlens, const int* key_lens, const float* rel_bias, int bias_span,
           void* ctx, int heads, int head_dim, float scale),
          (qkv, cu_seqlens, key_lens, rel_bias, bias_span, ctx, heads, head_dim, scale))
