// Bias add and activation in place over a rows × cols matrix: x = act(x + bias). `bias` may be null (the
// GEMM's epilogue already added it). act: 0 none, 1 exact GELU (erf, as PyTorch's nn.GELU()), 2 GELU's tanh
// form, 3 ReLU, 4 SiLU. Grid-stride loop.
#define EK_ACT_NONE 0
#define EK_ACT_GELU 1
#define EK_ACT_GELU_TANH 2
#define EK_ACT_RELU 3
#define EK_ACT_SILU 4

__device__ __forceinline__ float ek_activate(float x, int act) {
  switch (act) {
    case EK_ACT_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case EK_ACT_GELU_TANH: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.f + tanhf(inner));
    }
    case EK_ACT_RELU: return fmaxf(x, 0.f);
    case EK_ACT_SILU: return x / (1.f + expf(-x));
    default: return x;
  }
}

template <class D>
__device__ void bias_act(void* x_, const void* bias_, long long rows, int cols, int act) {
  typedef typename D::T T;
  T* x = (T*)x_;
  const T* bias = (const T*)bias_;
  const long long n = rows * cols;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    float v = D::load(x[i]);
    if (bias) v += D::load(bias[i % cols]);
    x[i] = D::store(ek_activate(v, act));
  }
}
EK_EXPORT(bias_act, (void* x, const void* bias, long long rows, int cols, int act), (x, bias, rows, cols, act))
