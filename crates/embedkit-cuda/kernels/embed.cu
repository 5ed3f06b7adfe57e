// Embeddings: word + position (+ token type) rows summed in f32, then LayerNorm. One block per token.
// Position ids are computed here from the sequence boundaries: position = index in its sequence +
// `pos_offset` (0 for BERT; pad_token_id + 1 for RoBERTa/XLM-RoBERTa and MPNet, whose position table
// starts past the padding index).
template <class D>
__device__ void embed_ln(const unsigned* ids, const unsigned* type_ids, const int* cu_seqlens, int num_seqs,
                         int pos_offset, const void* word_, const void* position_, const void* token_type_,
                         int type_vocab, const float* gamma, const float* beta, void* out_, int hidden,
                         float eps) {
  typedef typename D::T T;
  const T* word = (const T*)word_;
  const T* position = (const T*)position_;
  const T* token_type = (const T*)token_type_;
  T* out = (T*)out_;
  const int t = blockIdx.x;
  // The sequence holding token t: the last s with cu_seqlens[s] <= t.
  int lo = 0, hi = num_seqs;
  while (hi - lo > 1) {
    const int mid = (lo + hi) >> 1;
    if (cu_seqlens[mid] <= t) lo = mid; else hi = mid;
  }
  const long long pos = t - cu_seqlens[lo] + pos_offset;
  const long long id = ids[t];
  // Out-of-range type ids are clamped to the last type, as the CPU backend does (single-sequence input is
  // all type 0 anyway).
  unsigned ty = type_ids[t];
  if (type_vocab > 0 && ty >= (unsigned)type_vocab) ty = type_vocab - 1;
  float v[EK_MAX_PER_THREAD];
#pragma unroll
  for (int k = 0; k < EK_MAX_PER_THREAD; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    v[k] = 0.f;
    if (c < hidden) {
      float x = D::load(word[id * hidden + c]) + D::load(position[pos * hidden + c]);
      if (token_type) x += D::load(token_type[(long long)ty * hidden + c]);
      v[k] = x;
    }
  }
  ek_layer_norm_row<D>(v, gamma, beta, out + (long long)t * hidden, hidden, eps);
}
EK_EXPORT(embed_ln,
          (const unsigned* ids, const unsigned* type_ids, const int* cu_seqlens, int num_seqs, int pos_offset,
           const void* word, const void* position, const void* token_type, int type_vocab, const float* gamma,
           const float* beta, void* out, int hidden, float eps),
          (ids, type_ids, cu_seqlens, num_seqs, pos_offset, word, position, token_type, type_vocab, gamma, beta,
           out, hidden, eps))
