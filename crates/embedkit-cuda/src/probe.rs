//! Whether a CUDA device can be used here, found without panicking: cudarc panics when a library it needs
//! cannot be opened, so every library is probed by name first.

use crate::CudaError;
use crate::backend::guarded;
use cudarc::driver::{CudaContext, DriverError, sys::CUresult};

/// Checks that device `ordinal` exists and that the driver, NVRTC and cuBLASLt libraries can be opened.
/// The error says in one line what is missing.
pub fn require(ordinal: usize) -> Result<(), CudaError> {
    // SAFETY: each only tries to open its library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    guarded(|| {
        let count = CudaContext::device_count().map_err(|e: DriverError| match e.0 {
            CUresult::CUDA_ERROR_NO_DEVICE => CudaError::NoDevice {
                ordinal,
                found: "the NVIDIA driver reports no CUDA device".into(),
            },
            _ => CudaError::Driver {
                action: "initializing CUDA".into(),
                message: e.to_string(),
            },
        })?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal,
                found: format!("the driver reports {count} device(s), numbered from 0"),
            });
        }
        Ok(())
    })?;
    if !crate::kernels::nvrtc_available() {
        return Err(CudaError::MissingLibrary {
            library: "libnvrtc.so",
            hint: "NVRTC: the CUDA toolkit, or `pip install nvidia-cuda-nvrtc` with its lib folder on LD_LIBRARY_PATH",
        });
    }
    // SAFETY: as above.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            library: "libcublasLt.so",
            hint: "cuBLASLt: the CUDA toolkit, or `pip install nvidia-cublas` with its lib folder on LD_LIBRARY_PATH",
        });
    }
    Ok(())
}

/// Whether [`require`] passes: what `--device auto` asks.
pub fn available(ordinal: usize) -> bool {
    require(ordinal).is_ok()
}
