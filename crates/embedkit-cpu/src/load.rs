//! Building the BERT-shaped encoders' backend ([`CpuBackend`]) from safetensors, one layer at a time.
//!
//! The packed model is what stays; the f32 tensors read from the files are transients. Reading a layer,
//! packing it and dropping its f32 tensors before reading the next keeps the load's peak at the packed model
//! plus about one layer's f32 tensors (all-MiniLM-L6-v2: 7 MB; all-mpnet-base-v2: 28 MB), instead of the packed
//! model plus every f32 tensor.

use crate::{Compute, CpuBackend, CpuError, CpuOptions, Layer, Projection, Runtime};
use embedkit_model::SafetensorsFiles;
use embedkit_model::{EncoderConfig, EncoderReader, EncoderWeights, LayerWeights, ModelError};

impl Layer {
    /// Packs one layer's f32 weights into `compute`'s layout, consuming them: each projection's f32 weights
    /// are freed as soon as it is packed.
    pub(crate) fn pack(l: LayerWeights, h: usize, compute: Compute) -> Self {
        let LayerWeights {
            query,
            key,
            value,
            attention_output,
            attention_norm,
            intermediate,
            output,
            output_norm,
        } = l;
        // Q, K and V stacked in that order; Q's buffer grows to take K and V behind it, rather than a fourth
        // buffer holding copies of all three. A missing bias is zeros.
        let mut qkv_bias = Vec::with_capacity(3 * h);
        let mut push_bias = |bias: Option<embedkit_model::Tensor>| match bias {
            Some(b) => qkv_bias.extend_from_slice(&b.data),
            None => qkv_bias.extend(std::iter::repeat_n(0.0, h)),
        };
        push_bias(query.bias);
        let mut qkv_weight = query.weight.data;
        qkv_weight.reserve_exact(2 * h * h);
        for lin in [key, value] {
            qkv_weight.extend_from_slice(&lin.weight.data);
            push_bias(lin.bias);
        }
        Layer {
            qkv: Projection::new(qkv_weight, Some(qkv_bias), 3 * h, h, compute),
            attention_output: Projection::from_linear(attention_output, compute),
            attention_norm,
            intermediate: Projection::from_linear(intermediate, compute),
            output: Projection::from_linear(output, compute),
            output_norm,
        }
    }
}

impl CpuBackend {
    /// Reads the encoder's weights from `files` (shape-checked against `config`) and builds the backend,
    /// packing each layer as it is read: only one layer's f32 tensors are held beside the packed model.
    pub fn load(
        config: &EncoderConfig,
        files: &SafetensorsFiles,
        options: &CpuOptions,
    ) -> Result<Self, ModelError> {
        // First, so that a refused `--compute` is reported before any weight is read.
        let runtime = Runtime::new(options).map_err(|e| ModelError::Backend(Box::new(e)))?;
        let reader = EncoderReader::new(files, config)?;
        let weights = reader.without_layers()?;
        let layers = (0..config.num_layers)
            .map(|l| {
                Ok(Layer::pack(
                    reader.layer(l)?,
                    config.hidden_size,
                    options.compute,
                ))
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self::assemble(config, weights, layers, runtime))
    }

    /// Builds the backend from weights already read, taking ownership of them (each layer's f32 weights are
    /// freed as it is packed).
    pub fn new(
        config: &EncoderConfig,
        mut weights: EncoderWeights,
        options: &CpuOptions,
    ) -> Result<Self, CpuError> {
        let runtime = Runtime::new(options)?;
        let layers = std::mem::take(&mut weights.layers)
            .into_iter()
            .map(|l| Layer::pack(l, config.hidden_size, options.compute))
            .collect();
        Ok(Self::assemble(config, weights, layers, runtime))
    }

    /// The backend of packed `layers` and the rest of `weights` (whose `layers` are ignored).
    fn assemble(
        config: &EncoderConfig,
        weights: EncoderWeights,
        layers: Vec<Layer>,
        runtime: Runtime,
    ) -> Self {
        let Runtime {
            pool,
            threads,
            simd,
            compute,
            vnni,
            panel_max_rows,
        } = runtime;
        Self {
            config: config.clone(),
            word_embeddings: weights.word_embeddings.data,
            position_embeddings: weights.position_embeddings.data,
            token_type_embeddings: weights.token_type_embeddings.map(|t| t.data),
            embedding_norm: weights.embedding_norm,
            layers,
            relative_attention_bias: weights.relative_attention_bias.map(|t| t.data),
            pool,
            threads,
            simd,
            compute,
            vnni,
            panel_max_rows,
            buffers: Default::default(),
        }
    }
}

/// Hands the heap's free pages back to the system after a load; a no-op but on glibc.
///
/// The load frees each f32 tensor as its layer is packed, and the packed layers are allocated between those
/// frees, so the freed tensors leave holes in the heap that glibc keeps (above its trim threshold only the heap's
/// top is returned): all-mpnet-base-v2's server kept 38 MB more than with every large block mapped on its own
/// (`embedkit serve` after one request: 486.0 MB against 447.7 MB with `MALLOC_MMAP_THRESHOLD_=1048576`).
pub(crate) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system (taking glibc's own locks); it has no
    // memory-safety preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
