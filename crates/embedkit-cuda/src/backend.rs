//! The runtime: weights on the device, one stream + cuBLASLt handle + buffers per worker, and the forward
//! pass as a sequence of cuBLASLt GEMMs and the kernels of kernels/*.cu.
//!
//! NOT YET RUN ON A GPU: this file compiles and its host-side planning is unit-tested (plan.rs), but no
//! line of it has executed against a device. `scripts/gpu-check` is the first run; see docs/GPU.md.

use crate::plan::{self, BatchLayout, BufferSizes};
use crate::weights::{DeviceLinear, DeviceModel, DeviceNorm};
use crate::{CudaDevice, CudaError, DType, kernels};
use cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulShared, Workspace, sys as blas};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, PinnedHostSlice,
    PushKernelArg, ValidAsZeroBits,
};
use embedkit_model::{
    Activation, Backend, BackendError, EncoderConfig, EncoderWeights, TokenBatch,
};
use half::{bf16, f16};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How the CUDA backend runs.
#[derive(Debug, Clone, Default)]
pub struct CudaOptions {
    /// Which device, and the storage type.
    pub device: CudaDevice,
    /// Workers, each with its own stream, cuBLASLt handle and buffers, so that calls from several threads
    /// overlap on the GPU; 0 or 1: one.
    pub workers: usize,
    /// Where compiled kernels are cached (`EMBEDKIT_HOME/cuda`); `None` compiles at every load.
    pub cache_dir: Option<PathBuf>,
}

/// The storage types the engine runs in.
pub trait Storage: DeviceRepr + ValidAsZeroBits + Copy + Send + Sync + 'static {}
impl Storage for f32 {}
impl Storage for f16 {}
impl Storage for bf16 {}

/// cuBLASLt with the compute types embedkit wants. cudarc's own f32 GEMM uses TF32 (10-bit mantissa
/// products), which would make `+f32` no more exact than bf16; here f32 is `CUBLAS_COMPUTE_32F`, and f16/bf16
/// accumulate in f32.
struct StrictBlas(CudaBlasLT);

impl MatmulShared for StrictBlas {
    fn handle(&self) -> &blas::cublasLtHandle_t {
        self.0.handle()
    }
    fn workspace(&self) -> &Workspace {
        self.0.workspace()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.0.stream()
    }
}

macro_rules! strict_matmul {
    ($t:ty, $data:ident) => {
        impl Matmul<$t> for StrictBlas {
            fn matrix_type() -> blas::cudaDataType {
                blas::cudaDataType_t::$data
            }
            fn compute_type() -> blas::cublasComputeType_t {
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F
            }
        }
    };
}
strict_matmul!(f32, CUDA_R_32F);
strict_matmul!(f16, CUDA_R_16F);
strict_matmul!(bf16, CUDA_R_16BF);

/// The kernels of one storage type.
struct Kernels {
    embed_ln: CudaFunction,
    add_ln: CudaFunction,
    bias_act: CudaFunction,
    attention: CudaFunction,
    pool: CudaFunction,
    from_f32: CudaFunction,
    to_f32: CudaFunction,
}

impl Kernels {
    fn load(module: &Arc<CudaModule>, dtype: DType) -> Result<Self, CudaError> {
        let f = |name: &str| {
            let full = format!("{name}_{}", dtype.suffix());
            module
                .load_function(&full)
                .map_err(CudaError::driver(format!("loading kernel {full}")))
        };
        Ok(Self {
            embed_ln: f("embed_ln")?,
            add_ln: f("add_ln")?,
            bias_act: f("bias_act")?,
            attention: f("attention")?,
            pool: f("pool")?,
            from_f32: f("from_f32")?,
            to_f32: f("to_f32")?,
        })
    }
}

/// A worker's device buffers, grown to the largest batch seen.
struct Buffers<T> {
    tokens: usize,
    seqs: usize,
    max_len: usize,
    x: CudaSlice<T>,
    y: CudaSlice<T>,
    qkv: CudaSlice<T>,
    context: CudaSlice<T>,
    sub: CudaSlice<T>,
    ff: CudaSlice<T>,
    out_f32: CudaSlice<f32>,
    ints: CudaSlice<u32>,
    relative: CudaSlice<f32>,
    /// Page-locked: the device writes the result here directly (no staging copy by the driver).
    host_out: PinnedHostSlice<f32>,
    packed: Vec<u32>,
}

struct Worker<T> {
    stream: Arc<CudaStream>,
    blas: StrictBlas,
    buffers: Option<Buffers<T>>,
}

struct Engine<T> {
    config: EncoderConfig,
    ctx: Arc<CudaContext>,
    kernels: Kernels,
    model: DeviceModel<T>,
    workers: Vec<Mutex<Worker<T>>>,
    next: AtomicUsize,
}

/// The storage-type-specific engines behind one type.
enum AnyEngine {
    F32(Engine<f32>),
    F16(Engine<f16>),
    BF16(Engine<bf16>),
}

/// A transformer encoder on a CUDA GPU (BERT, XLM-RoBERTa, MPNet), behind the same [`Backend`] interface as
/// the CPU's.
pub struct CudaBackend {
    name: String,
    device_name: String,
    engine: AnyEngine,
}

/// A launch's pointer argument that may be absent (`nullptr` in the kernel).
const NULL: u64 = 0;

impl<T: Storage> Engine<T>
where
    StrictBlas: Matmul<T>,
{
    fn new(
        ctx: Arc<CudaContext>,
        module: &Arc<CudaModule>,
        dtype: DType,
        config: &EncoderConfig,
        weights: EncoderWeights,
        workers: usize,
    ) -> Result<Self, CudaError> {
        let kernels = Kernels::load(module, dtype)?;
        let stream = ctx.default_stream();
        let model = DeviceModel::upload(&stream, &kernels.from_f32, weights)?;
        stream
            .synchronize()
            .map_err(CudaError::driver("uploading weights"))?;
        let workers = (0..workers.max(1))
            .map(|_| {
                let stream = ctx
                    .new_stream()
                    .map_err(CudaError::driver("creating a stream"))?;
                let blas = CudaBlasLT::new(stream.clone())
                    .map_err(CudaError::blas("creating a cuBLASLt handle"))?;
                Ok(Mutex::new(Worker {
                    stream,
                    blas: StrictBlas(blas),
                    buffers: None,
                }))
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        Ok(Self {
            config: config.clone(),
            ctx,
            kernels,
            model,
            workers,
            next: AtomicUsize::new(0),
        })
    }

    /// A free worker if there is one, else the next in turn.
    fn worker(&self) -> std::sync::MutexGuard<'_, Worker<T>> {
        for w in &self.workers {
            if let Ok(guard) = w.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        // A worker whose previous call panicked holds no state that could be half-updated in a way that
        // matters: buffers are rewritten by every call.
        self.workers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the encoder; returns the last hidden state (f32, tokens × hidden) or, with `pool`, one pooled
    /// (and optionally normalized) vector per sequence.
    fn run(
        &self,
        batch: &TokenBatch<'_>,
        pool: Option<(i32, bool)>,
    ) -> Result<Vec<f32>, CudaError> {
        let cfg = &self.config;
        let layout = BatchLayout::new(batch, cfg)?;
        if layout.tokens == 0 {
            return Ok(Vec::new());
        }
        self.ctx
            .bind_to_thread()
            .map_err(CudaError::driver("binding the context"))?;
        let mut guard = self.worker();
        let worker = &mut *guard;
        ensure_buffers(worker, cfg, &layout)?;
        let stream = worker.stream.clone();
        let blas = &worker.blas;
        let b = worker.buffers.as_mut().expect("ensure_buffers made them");
        let k = &self.kernels;
        let m = &self.model;
        let (t, h) = (layout.tokens, cfg.hidden_size);
        let drv = |what: &'static str| CudaError::driver(what);

        let off = plan::pack_ints(batch, &layout, &mut b.packed);
        stream
            .memcpy_htod(&b.packed[..], &mut b.ints.slice_mut(0..off.len))
            .map_err(drv("copying token ids"))?;
        let ids = b.ints.slice(0..off.type_ids);
        let types = b.ints.slice(off.type_ids..off.cu_seqlens);
        let cu = b.ints.slice(off.cu_seqlens..off.key_lens);
        let keys = b.ints.slice(off.key_lens..off.len.max(off.key_lens + 1));
        let span = (2 * layout.max_len).saturating_sub(1);
        if let (Some(table), Some(buckets)) =
            (&m.relative_table, cfg.relative_attention_num_buckets)
        {
            let bias = plan::relative_bias_table(table, buckets, cfg.num_heads, layout.max_len);
            stream
                .memcpy_htod(&bias[..], &mut b.relative.slice_mut(0..bias.len()))
                .map_err(drv("copying the relative bias"))?;
        }

        let (seqs, pos_offset) = (layout.seqs as i32, cfg.position_offset as i32);
        let (hidden, eps, type_vocab) = (h as i32, cfg.layer_norm_eps, cfg.type_vocab_size as i32);
        let rows = plan::rows_launch(t, h)?;
        let mut l = stream.launch_builder(&k.embed_ln);
        l.arg(&ids).arg(&types).arg(&cu).arg(&seqs).arg(&pos_offset);
        l.arg(&m.word).arg(&m.position);
        match &m.token_type {
            Some(tt) => l.arg(tt),
            None => l.arg(&NULL),
        };
        l.arg(&type_vocab)
            .arg(&m.embedding_norm.gamma)
            .arg(&m.embedding_norm.beta)
            .arg(&mut b.x)
            .arg(&hidden)
            .arg(&eps);
        // SAFETY: the arguments follow embed_ln's signature; buffers hold `t` rows (ensure_buffers).
        unsafe { l.launch(rows) }.map_err(drv("embeddings"))?;

        let (heads, head_dim) = (cfg.num_heads as i32, cfg.head_dim() as i32);
        let scale = 1.0f32 / (cfg.head_dim() as f32).sqrt();
        let bias_span = span as i32;
        let act = activation_code(cfg.activation);
        let (ff_rows, ff_cols) = (t as i64, cfg.intermediate_size as i32);
        let attention = plan::attention_launch(layout.max_len, cfg.num_heads, layout.seqs)?;
        for layer in &m.layers {
            gemm(blas, &layer.qkv, &b.x, &mut b.qkv, t)?;
            let mut l = stream.launch_builder(&k.attention);
            l.arg(&b.qkv).arg(&cu);
            if layout.key_lens.is_some() {
                l.arg(&keys);
            } else {
                l.arg(&NULL);
            }
            if m.relative_table.is_some() {
                l.arg(&b.relative);
            } else {
                l.arg(&NULL);
            }
            l.arg(&bias_span)
                .arg(&mut b.context)
                .arg(&heads)
                .arg(&head_dim)
                .arg(&scale);
            // SAFETY: attention's signature; grid from plan::attention_launch for this layout.
            unsafe { l.launch(attention) }.map_err(drv("attention"))?;
            gemm(blas, &layer.attention_output, &b.context, &mut b.sub, t)?;
            add_ln(
                &stream,
                k,
                &b.sub,
                &b.x,
                &layer.attention_norm,
                &mut b.y,
                rows,
                hidden,
                eps,
            )?;
            gemm(blas, &layer.intermediate, &b.y, &mut b.ff, t)?;
            let mut l = stream.launch_builder(&k.bias_act);
            l.arg(&mut b.ff)
                .arg(&NULL)
                .arg(&ff_rows)
                .arg(&ff_cols)
                .arg(&act);
            // SAFETY: bias_act over t × intermediate values of `ff`, no bias (the GEMM added it).
            unsafe { l.launch(plan::elementwise_launch(t * cfg.intermediate_size)) }
                .map_err(drv("activation"))?;
            gemm(blas, &layer.output, &b.ff, &mut b.sub, t)?;
            add_ln(
                &stream,
                k,
                &b.sub,
                &b.y,
                &layer.output_norm,
                &mut b.x,
                rows,
                hidden,
                eps,
            )?;
        }

        let n = match pool {
            Some((mode, normalize)) => {
                let normalize = normalize as i32;
                let mut l = stream.launch_builder(&k.pool);
                l.arg(&b.x)
                    .arg(&cu)
                    .arg(&mut b.out_f32)
                    .arg(&hidden)
                    .arg(&mode)
                    .arg(&normalize);
                // SAFETY: pool writes seqs × hidden f32 values (≤ tokens × hidden).
                unsafe { l.launch(plan::pool_launch(layout.seqs)?) }.map_err(drv("pooling"))?;
                layout.seqs * h
            }
            None => {
                let count = (t * h) as i64;
                let mut l = stream.launch_builder(&k.to_f32);
                l.arg(&b.x).arg(&mut b.out_f32).arg(&count);
                // SAFETY: to_f32 over t × hidden values.
                unsafe { l.launch(plan::elementwise_launch(t * h)) }.map_err(drv("widening"))?;
                t * h
            }
        };
        stream
            .memcpy_dtoh(&b.out_f32.slice(0..n), &mut b.host_out)
            .map_err(drv("copying the result"))?;
        stream
            .synchronize()
            .map_err(drv("running the forward pass"))?;
        let host = b.host_out.as_slice().map_err(drv("reading the result"))?;
        Ok(host[..n].to_vec())
    }
}

#[allow(clippy::too_many_arguments)]
fn add_ln<T: Storage>(
    stream: &Arc<CudaStream>,
    k: &Kernels,
    x: &CudaSlice<T>,
    residual: &CudaSlice<T>,
    norm: &DeviceNorm,
    out: &mut CudaSlice<T>,
    rows: cudarc::driver::LaunchConfig,
    hidden: i32,
    eps: f32,
) -> Result<(), CudaError> {
    let mut l = stream.launch_builder(&k.add_ln);
    l.arg(x)
        .arg(residual)
        .arg(&norm.gamma)
        .arg(&norm.beta)
        .arg(out)
        .arg(&hidden)
        .arg(&eps);
    // SAFETY: add_ln's signature; one block per row of `hidden` values.
    unsafe { l.launch(rows) }.map_err(CudaError::driver("residual LayerNorm"))?;
    Ok(())
}

fn gemm<T: Storage>(
    blas: &StrictBlas,
    lin: &DeviceLinear<T>,
    x: &CudaSlice<T>,
    y: &mut CudaSlice<T>,
    tokens: usize,
) -> Result<(), CudaError>
where
    StrictBlas: Matmul<T>,
{
    let cfg = plan::linear_gemm(tokens, lin.n, lin.k);
    // SAFETY: x holds ≥ tokens × k values, y ≥ tokens × n, the weight n × k and the bias n (plan::BufferSizes).
    unsafe { blas.matmul(cfg, &lin.weight, x, y, Some(&lin.bias), None) }.map_err(CudaError::blas(
        format!("GEMM {tokens}×{}×{}", lin.n, lin.k),
    ))
}

fn ensure_buffers<T: Storage>(
    worker: &mut Worker<T>,
    cfg: &EncoderConfig,
    layout: &BatchLayout,
) -> Result<(), CudaError> {
    if let Some(b) = &worker.buffers
        && b.tokens >= layout.tokens
        && b.seqs >= layout.seqs
        && b.max_len >= layout.max_len
    {
        return Ok(());
    }
    // Grow to at least the new batch, and by half again, so that a slowly growing stream of batches does
    // not reallocate every time.
    let old = worker
        .buffers
        .as_ref()
        .map_or((0, 0, 0), |b| (b.tokens, b.seqs, b.max_len));
    let grow = |old: usize, new: usize| {
        if new > old {
            new.max(old + old / 2)
        } else {
            old
        }
    };
    let tokens = grow(old.0, layout.tokens);
    let seqs = grow(old.1, layout.seqs);
    let max_len = grow(old.2, layout.max_len);
    worker.buffers = None; // free before allocating the larger set
    let sizes = BufferSizes::new(cfg, tokens, seqs);
    let s = &worker.stream;
    let alloc = |n: usize| {
        s.alloc_zeros::<T>(n.max(1))
            .map_err(CudaError::driver("allocating activation buffers"))
    };
    let span = (2 * max_len).saturating_sub(1).max(1);
    worker.buffers = Some(Buffers {
        tokens,
        seqs,
        max_len,
        x: alloc(sizes.hidden)?,
        y: alloc(sizes.hidden)?,
        qkv: alloc(sizes.qkv)?,
        context: alloc(sizes.context)?,
        sub: alloc(sizes.context)?,
        ff: alloc(sizes.ff)?,
        out_f32: s
            .alloc_zeros::<f32>(sizes.out_f32.max(1))
            .map_err(CudaError::driver("allocating the output buffer"))?,
        ints: s
            .alloc_zeros::<u32>(sizes.ints.max(1))
            .map_err(CudaError::driver("allocating the input buffer"))?,
        relative: s
            .alloc_zeros::<f32>(cfg.num_heads * span)
            .map_err(CudaError::driver("allocating the relative bias"))?,
        // SAFETY: written by the device before it is read. Flags 0: not write-combined, since the host reads it.
        host_out: unsafe {
            s.context()
                .alloc_pinned_with_flags::<f32>(sizes.out_f32.max(1), 0)
        }
        .map_err(CudaError::driver("allocating pinned host memory"))?,
        packed: Vec::with_capacity(sizes.ints),
    });
    Ok(())
}

fn activation_code(a: Activation) -> i32 {
    // EK_ACT_* in kernels/activation.cu.
    match a {
        Activation::Gelu => 1,
        Activation::GeluTanh => 2,
        Activation::Relu => 3,
        Activation::Silu => 4,
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic in the CUDA bindings".into())
}

/// Runs `f`, turning a panic of the CUDA bindings (cudarc panics when a library or symbol is missing) into
/// an error: the caller gets a message, never an abort.
pub(crate) fn guarded<R>(f: impl FnOnce() -> Result<R, CudaError>) -> Result<R, CudaError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|p| Err(CudaError::Panic(panic_message(p))))
}

impl CudaBackend {
    /// Opens the device, compiles (or reads from the cache) the kernels for it, and uploads the weights.
    pub fn new(
        config: &EncoderConfig,
        weights: EncoderWeights,
        options: &CudaOptions,
    ) -> Result<Self, CudaError> {
        plan::check_config(config)?;
        let dev = options.device;
        crate::probe::require(dev.ordinal)?;
        guarded(|| {
            let ctx = CudaContext::new(dev.ordinal)
                .map_err(CudaError::driver(format!("opening device {}", dev.ordinal)))?;
            let (major, minor) = ctx
                .compute_capability()
                .map_err(CudaError::driver("reading the compute capability"))?;
            if major < 8 {
                return Err(CudaError::Unsupported(format!(
                    "compute capability {major}.{minor} (the kernels need 8.0 or later: A100, A10, L4, H100, …)"
                )));
            }
            let device_name = ctx.name().unwrap_or_else(|_| "CUDA device".into());
            let cubin =
                kernels::load_or_compile(options.cache_dir.as_deref(), major as u32, minor as u32)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                .map_err(CudaError::driver("loading the kernels"))?;
            let w = options.workers;
            let engine = match dev.dtype {
                DType::F32 => {
                    AnyEngine::F32(Engine::new(ctx, &module, dev.dtype, config, weights, w)?)
                }
                DType::F16 => {
                    AnyEngine::F16(Engine::new(ctx, &module, dev.dtype, config, weights, w)?)
                }
                DType::BF16 => {
                    AnyEngine::BF16(Engine::new(ctx, &module, dev.dtype, config, weights, w)?)
                }
            };
            Ok(Self {
                name: format!("cuda-{}", dev.dtype),
                device_name,
                engine,
            })
        })
    }

    /// The GPU's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Runs the encoder and pools on the device (mean, or CLS with `cls`), L2-normalizing when asked: one
    /// vector per sequence, `seqs × hidden`, with only those bytes copied back. For measuring the model
    /// alone; `LocalEmbedder` pools on the host through [`Backend::forward`].
    pub fn forward_pooled(
        &self,
        batch: &TokenBatch<'_>,
        cls: bool,
        normalize: bool,
    ) -> Result<Vec<f32>, CudaError> {
        let pool = Some((cls as i32, normalize));
        guarded(|| match &self.engine {
            AnyEngine::F32(e) => e.run(batch, pool),
            AnyEngine::F16(e) => e.run(batch, pool),
            AnyEngine::BF16(e) => e.run(batch, pool),
        })
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError> {
        guarded(|| match &self.engine {
            AnyEngine::F32(e) => e.run(batch, None),
            AnyEngine::F16(e) => e.run(batch, None),
            AnyEngine::BF16(e) => e.run(batch, None),
        })
        .map_err(|e| Box::new(e) as BackendError)
    }
}
