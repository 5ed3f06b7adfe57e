//! Errors of the CUDA backend: each one line, naming what is missing or wrong and where.

/// What can go wrong finding, preparing or running a CUDA device.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda (the driver's library) cannot be opened: no NVIDIA driver here.
    #[error(
        "no NVIDIA driver: libcuda.so.1 cannot be loaded (install the NVIDIA driver, or run on the cpu or auto device)"
    )]
    NoDriver,
    /// The driver is there but reports no usable device (or not the one asked for).
    #[error("no CUDA device {ordinal}: {found}")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// What the driver said (a count, or its error).
        found: String,
    },
    /// A CUDA library other than the driver cannot be opened.
    #[error("{library} cannot be loaded ({hint})")]
    MissingLibrary {
        /// The library's name.
        library: &'static str,
        /// Where it usually comes from.
        hint: &'static str,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error while {action}: {message}")]
    Driver {
        /// What was being done.
        action: String,
        /// The driver's error.
        message: String,
    },
    /// cuBLASLt failed.
    #[error("cuBLASLt error while {action}: {message}")]
    Blas {
        /// What was being done.
        action: String,
        /// cuBLASLt's status.
        message: String,
    },
    /// NVRTC could not compile the kernels.
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile {
        /// The target, e.g. sm_90.
        arch: String,
        /// NVRTC's log (or error).
        log: String,
    },
    /// The kernel cache could not be read or written.
    #[error("kernel cache {path}: {message}")]
    Cache {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The OS's message.
        message: String,
    },
    /// The model has a shape or architecture these kernels do not handle.
    #[error("the CUDA backend does not run this model: {0}")]
    Unsupported(String),
    /// A token id is outside the embedding table.
    #[error(
        "token id {id} is outside the vocabulary of {vocab} (is the tokenizer from another model?)"
    )]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// A sequence is longer than the position table allows.
    #[error("sequence of {len} tokens exceeds the model's {max} positions")]
    SequenceTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The batch's arrays disagree in length.
    #[error("malformed batch: {0}")]
    MalformedBatch(String),
    /// The CUDA bindings panicked (e.g. a function missing from an old driver); caught at the backend's edge.
    #[error("CUDA failure: {0}")]
    Panic(String),
}

impl CudaError {
    pub(crate) fn driver(
        action: impl Into<String>,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> Self {
        let action = action.into();
        move |e| CudaError::Driver {
            action,
            message: e.to_string(),
        }
    }

    pub(crate) fn blas(
        action: impl Into<String>,
    ) -> impl FnOnce(cudarc::cublaslt::result::CublasError) -> Self {
        let action = action.into();
        move |e| CudaError::Blas {
            action,
            message: e.to_string(),
        }
    }
}
