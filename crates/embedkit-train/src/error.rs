//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while training, with the file or setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Reading the model folder failed.
    #[error(transparent)]
    Model(#[from] embedkit_model::ModelError),
    /// A tensor operation failed (shape mismatch, out of memory).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The model cannot be trained by this crate.
    #[error("cannot train '{dir}': {reason}")]
    Unsupported {
        /// The model folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("cannot access '{path}': {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A data file has a bad row.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A data file as a whole is unusable (no rows, unknown format, missing columns).
    #[error("{path}: {message}")]
    DataFile {
        /// The data file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A training setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The tokenizer rejected a text.
    #[error("tokenizer failed on a text: {0}")]
    Tokenizer(String),
    /// A checkpoint is missing pieces or belongs to another run.
    #[error("bad checkpoint '{path}': {message}")]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            source,
        }
    }
}
