//! The model's weights on the device: uploaded once as f32, narrowed to the storage type there, shared by the
//! workers and only read afterwards.

use crate::backend::Storage;
use crate::{CudaError, plan};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, PushKernelArg};
use embedkit_model::{EncoderWeights, LayerNorm, Linear};
use std::sync::Arc;

pub(crate) struct DeviceLinear<T> {
    pub(crate) weight: CudaSlice<T>,
    pub(crate) bias: CudaSlice<T>,
    pub(crate) n: usize,
    pub(crate) k: usize,
}

pub(crate) struct DeviceNorm {
    pub(crate) gamma: CudaSlice<f32>,
    pub(crate) beta: CudaSlice<f32>,
}

pub(crate) struct DeviceLayer<T> {
    pub(crate) qkv: DeviceLinear<T>,
    pub(crate) attention_output: DeviceLinear<T>,
    pub(crate) attention_norm: DeviceNorm,
    pub(crate) intermediate: DeviceLinear<T>,
    pub(crate) output: DeviceLinear<T>,
    pub(crate) output_norm: DeviceNorm,
}

/// The model's weights on the device (shared by the workers; read-only after loading).
pub(crate) struct DeviceModel<T> {
    pub(crate) word: CudaSlice<T>,
    pub(crate) position: CudaSlice<T>,
    pub(crate) token_type: Option<CudaSlice<T>>,
    pub(crate) embedding_norm: DeviceNorm,
    pub(crate) layers: Vec<DeviceLayer<T>>,
    /// MPNet's `[buckets, heads]` table, on the host: the per-batch distance table is built from it.
    pub(crate) relative_table: Option<Vec<f32>>,
}

impl<T: Storage> DeviceModel<T> {
    /// Uploads `weights` on `stream` (not synchronized: the caller waits before using them from other streams).
    pub(crate) fn upload(
        stream: &Arc<CudaStream>,
        from_f32: &CudaFunction,
        weights: EncoderWeights,
    ) -> Result<Self, CudaError> {
        let layers = weights
            .layers
            .iter()
            .map(|l| {
                Ok(DeviceLayer {
                    qkv: upload_linear(stream, from_f32, &[&l.query, &l.key, &l.value])?,
                    attention_output: upload_linear(stream, from_f32, &[&l.attention_output])?,
                    attention_norm: upload_norm(stream, &l.attention_norm)?,
                    intermediate: upload_linear(stream, from_f32, &[&l.intermediate])?,
                    output: upload_linear(stream, from_f32, &[&l.output])?,
                    output_norm: upload_norm(stream, &l.output_norm)?,
                })
            })
            .collect::<Result<Vec<_>, CudaError>>()?;
        let model = DeviceModel {
            word: upload(stream, from_f32, &weights.word_embeddings.data)?,
            position: upload(stream, from_f32, &weights.position_embeddings.data)?,
            token_type: weights
                .token_type_embeddings
                .as_ref()
                .map(|t| upload(stream, from_f32, &t.data))
                .transpose()?,
            embedding_norm: upload_norm(stream, &weights.embedding_norm)?,
            layers,
            relative_table: weights.relative_attention_bias.map(|t| t.data),
        };
        Ok(model)
    }
}

fn upload<T: Storage>(
    stream: &Arc<CudaStream>,
    from_f32: &CudaFunction,
    data: &[f32],
) -> Result<CudaSlice<T>, CudaError> {
    // Uploaded as f32 and narrowed on the device by `from_f32` (round to nearest even, as torch's .half()).
    let staging = stream
        .clone_htod(data)
        .map_err(CudaError::driver("uploading weights"))?;
    let mut out = stream
        .alloc_zeros::<T>(data.len().max(1))
        .map_err(CudaError::driver("allocating weights"))?;
    let n = data.len() as i64;
    let mut launch = stream.launch_builder(from_f32);
    launch.arg(&staging).arg(&mut out).arg(&n);
    // SAFETY: `from_f32(const float*, T*, long long)` with `n` elements in both buffers.
    unsafe { launch.launch(plan::elementwise_launch(data.len())) }
        .map_err(CudaError::driver("narrowing weights"))?;
    Ok(out)
}

fn upload_f32(stream: &Arc<CudaStream>, data: &[f32]) -> Result<CudaSlice<f32>, CudaError> {
    stream
        .clone_htod(data)
        .map_err(CudaError::driver("uploading weights"))
}

fn upload_norm(stream: &Arc<CudaStream>, n: &LayerNorm) -> Result<DeviceNorm, CudaError> {
    Ok(DeviceNorm {
        gamma: upload_f32(stream, &n.weight.data)?,
        beta: upload_f32(stream, &n.bias.data)?,
    })
}

fn upload_linear<T: Storage>(
    stream: &Arc<CudaStream>,
    from_f32: &CudaFunction,
    parts: &[&Linear],
) -> Result<DeviceLinear<T>, CudaError> {
    // Several linears with the same input are stacked into one (Q, K and V: one GEMM). A missing bias is 0.
    let k = parts[0].weight.shape[1];
    let mut weight = Vec::new();
    let mut bias = Vec::new();
    for l in parts {
        let n = l.weight.shape[0];
        weight.extend_from_slice(&l.weight.data);
        match &l.bias {
            Some(b) => bias.extend_from_slice(&b.data),
            None => bias.extend(std::iter::repeat_n(0.0, n)),
        }
    }
    Ok(DeviceLinear {
        n: bias.len(),
        k,
        weight: upload(stream, from_f32, &weight)?,
        bias: upload(stream, from_f32, &bias)?,
    })
}
