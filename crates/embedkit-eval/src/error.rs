use std::path::PathBuf;

/// Why an evaluation could not run. Every message is one line naming the file (and line) or the model at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A file could not be read.
    #[error("cannot read '{}': {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a data file is malformed.
    #[error("{}:{line}: {reason}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A data set is unusable as a whole (no queries, a missing file, mismatched sizes).
    #[error("{}: {reason}", .path.display())]
    Dataset {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Building or searching the evaluation's temporary index failed.
    #[error("index search failed: {reason}")]
    Index {
        /// What failed.
        reason: String,
    },
    /// The embedder failed.
    #[error("embedding with {model} failed: {source}")]
    Embed {
        /// The model's name.
        model: String,
        /// Its error.
        #[source]
        source: embedkit_core::EmbedError,
    },
}

impl EvalError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EvalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn parse(path: &std::path::Path, line: usize, reason: impl Into<String>) -> Self {
        EvalError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(path: &std::path::Path, reason: impl Into<String>) -> Self {
        EvalError::Dataset {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
