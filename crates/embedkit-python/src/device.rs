//! `device=`: which backend a local model loads onto (the CPU's, or the CUDA one of embedkit-cuda).

use crate::errors::from_model;
use embedkit_cpu::Compute;
use embedkit_cuda::{CudaDevice, Device};
use embedkit_model::LocalEmbedder;
use pyo3::PyResult;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use std::path::Path;

/// The GPU to load onto, or `None` for the CPU: `cuda` must be usable (else a RuntimeError saying what is
/// missing, in one line), `auto` is the GPU when it is usable.
pub fn choose(device: Device, compute: Compute) -> PyResult<Option<CudaDevice>> {
    let gpu = match device {
        Device::Cpu => None,
        Device::Cuda(d) => {
            embedkit_cuda::probe::require(d.ordinal)
                .map_err(|e| PyRuntimeError::new_err(format!("device '{device}': {e}")))?;
            Some(d)
        }
        Device::Auto(d) => embedkit_cuda::probe::available(d.ordinal).then_some(d),
    };
    if gpu.is_some() && compute != Compute::F32 {
        return Err(PyValueError::new_err(
            "compute= is for the CPU; on a GPU choose the type in device= ('cuda+f16', 'cuda+bf16', 'cuda+f32')",
        ));
    }
    Ok(gpu)
}

/// Loads the model folder onto `gpu`, caching compiled kernels under `home/cuda`.
pub fn load(name: &str, dir: &Path, gpu: CudaDevice, home: &Path) -> PyResult<LocalEmbedder> {
    let options = embedkit_cuda::CudaOptions {
        device: gpu,
        workers: 1,
        cache_dir: Some(home.join("cuda")),
    };
    embedkit_cuda::load_model(name, dir, &options).map_err(|e| from_model(name, e))
}
