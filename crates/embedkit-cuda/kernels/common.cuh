// Shared definitions of embedkit's CUDA kernels. Compiled by NVRTC at run time, so this file includes no
// CUDA header: NVRTC (as the PyPI wheel ships it) has no cuda_fp16.h, and a driver-only machine has no toolkit.
// fp16 and bf16 values are stored as 16-bit integers and converted with PTX instructions (cvt), which every
// architecture embedkit targets (sm_80 and later) has.
//
// Every kernel comes in three versions, named NAME_f32, NAME_f16 and NAME_bf16 after the storage type of its
// activations and weights; arithmetic is f32 in all of them (sums, LayerNorm statistics, softmax).

typedef unsigned short ek_u16;

#define EK_FULL_MASK 0xffffffffu
// Rows of at most EK_MAX_PER_THREAD × blockDim.x values are held in registers by the row kernels.
#define EK_MAX_PER_THREAD 8
#define EK_NEG_INF (-__int_as_float(0x7f800000))

struct F32 {
  typedef float T;
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float f) { return f; }
};

struct F16 {
  typedef ek_u16 T;
  static __device__ __forceinline__ float load(ek_u16 v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
  }
  static __device__ __forceinline__ ek_u16 store(float f) {
    ek_u16 v;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v) : "f"(f));
    return v;
  }
};

struct BF16 {
  typedef ek_u16 T;
  // bf16 is the upper half of an f32.
  static __device__ __forceinline__ float load(ek_u16 v) { return __uint_as_float(((unsigned)v) << 16); }
  static __device__ __forceinline__ ek_u16 store(float f) {
    ek_u16 v;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(v) : "f"(f));
    return v;
  }
};

__device__ __forceinline__ float ek_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(EK_FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float ek_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(EK_FULL_MASK, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float ek_block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = ek_warp_sum(v);
  __syncthreads();  // `partial` may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < warps; ++w) total += partial[w];
  return total;
}

// LayerNorm of one row held in registers (v[k] is column threadIdx.x + k·blockDim.x), written as D to `out`.
// Statistics in f32, two passes (mean, then the mean of squared deviations) as PyTorch computes them.
template <class D>
__device__ __forceinline__ void ek_layer_norm_row(const float (&v)[EK_MAX_PER_THREAD], const float* gamma,
                                                  const float* beta, typename D::T* out, int hidden, float eps) {
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < EK_MAX_PER_THREAD; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    if (c < hidden) sum += v[k];
  }
  const float mean = ek_block_sum(sum) / hidden;
  float sq = 0.f;
#pragma unroll
  for (int k = 0; k < EK_MAX_PER_THREAD; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    if (c < hidden) sq += (v[k] - mean) * (v[k] - mean);
  }
  const float rstd = rsqrtf(ek_block_sum(sq) / hidden + eps);
#pragma unroll
  for (int k = 0; k < EK_MAX_PER_THREAD; ++k) {
    const int c = threadIdx.x + k * blockDim.x;
    if (c < hidden) out[c] = D::store((v[k] - mean) * rstd * gamma[c] + beta[c]);
  }
}

// Exports a device template `name<D>` as three kernels name_f32, name_f16, name_bf16. Storage-typed pointers
// are passed as void* and cast by the template.
#define EK_EXPORT(name, params, args)                              \
  extern "C" __global__ void name##_f32 params { name<F32> args; } \
  extern "C" __global__ void name##_f16 params { name<F16> args; } \
  extern "C" __global__ void name##_bf16 params { name<BF16> args; }
