//! Errors of reading and writing vector files; every one names the file at fault.

use std::path::PathBuf;

/// Why a Parquet read, write, check or merge failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system refused (names the file and what was being done).
    #[error("cannot {action} '{path}': {source}")]
    Io {
        /// What was being done ("read", "write", "create", …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Parquet or Arrow layer refused (a corrupt file, an unsupported encoding, …).
    #[error("{path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The library's message.
        message: String,
    },
    /// The file is readable but not what was asked for (a missing column, a null text, a wrong type, …).
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the column, row or record.
        message: String,
    },
    /// Existing output was made with other settings than this run's.
    #[error(
        "{path} was made with other settings ({differences}); rerun with the same options, or pass --overwrite to replace it"
    )]
    SettingsChanged {
        /// The part file or shard folder.
        path: PathBuf,
        /// Each differing setting: `name: then → now`.
        differences: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// An [`Error::Parquet`] for `path`, from any displayable library error.
    pub fn parquet<E: std::fmt::Display>(path: impl Into<PathBuf>) -> impl FnOnce(E) -> Error {
        let path = path.into();
        move |e| Error::Parquet {
            path,
            message: e.to_string(),
        }
    }

    /// An [`Error::Invalid`].
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
