//! embedkit's CUDA backend, built without the CUDA toolkit: cudarc opens libcuda, libnvrtc and libcublasLt at
//! run time; the kernels are CUDA C in `kernels/*.cu`, embedded in the binary and compiled by NVRTC for the GPU
//! found (cached under `EMBEDKIT_HOME/cuda`); the matrix products are cuBLASLt GEMMs (fp16/bf16 on tensor
//! cores with f32 accumulation and a fused bias, or f32 without TF32).
//!
//! The forward pass is the CPU backend's, unpadded: a batch is its sequences back to back, the linear layers
//! see one `tokens × hidden` matrix, attention runs per (sequence, head) with f32 softmax statistics, and
//! LayerNorm statistics are f32. MPNet's relative position bias and RoBERTa's position offset are handled.
//!
//! Status: the kernels compile for sm_80/86/89/90 in the tests and the host-side planning is unit-tested,
//! but the runtime has never run on a GPU (none was available where it was written); `scripts/gpu-check` is
//! the prepared first run. See docs/GPU.md.

mod backend;
mod device;
mod error;
pub mod kernels;
pub mod plan;
pub mod probe;
mod weights;

pub use backend::{CudaBackend, CudaOptions, Storage};
pub use device::{CudaDevice, DType, Device};
pub use error::CudaError;

use embedkit_model::{Backend, LocalEmbedder, ModelError};
use std::path::Path;

/// Loads the model folder `dir` onto a CUDA device, as `embedkit_cpu::load_model` does onto the CPU. The
/// device is probed first, so a machine without a driver or GPU fails at once with a one-line error.
pub fn load_model(
    name: &str,
    dir: &Path,
    options: &CudaOptions,
) -> Result<LocalEmbedder, ModelError> {
    probe::require(options.device.ordinal).map_err(|e| ModelError::Backend(Box::new(e)))?;
    LocalEmbedder::load(name, dir, |config, weights| {
        Ok(Box::new(CudaBackend::new(config, weights, options)?) as Box<dyn Backend>)
    })
}
