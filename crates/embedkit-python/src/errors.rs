//! Rust errors as the Python exceptions a user of sentence-transformers expects, with the CLI's one-line
//! messages: a missing model is `FileNotFoundError`, a bad option `ValueError`, anything else
//! `RuntimeError`.

use embedkit_core::EmbedError;
use embedkit_model::ModelError;
use embedkit_providers::ProviderError;
use embedkit_sources::SourceError;
use pyo3::PyErr;
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};

/// The error and its causes on one line, as the `embedkit` command prints them.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // thiserror messages often repeat their source's text; do not print it twice.
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    msg.replace('\n', " ")
}

/// `context: error` as a `RuntimeError`.
pub fn runtime(context: &str, e: &(dyn std::error::Error + 'static)) -> PyErr {
    PyRuntimeError::new_err(format!("{context}: {}", one_line(e)))
}

/// A model that could not be found or loaded.
pub fn from_source(spec: &str, e: SourceError) -> PyErr {
    let msg = format!("cannot load model '{spec}': {}", one_line(&e));
    match e {
        SourceError::PathNotFound(_) | SourceError::UnknownModel { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        SourceError::PathNotDir(_) => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// A model folder that could not be loaded.
pub fn from_model(spec: &str, e: ModelError) -> PyErr {
    let msg = format!("cannot load model '{spec}': {}", one_line(&e));
    match e {
        ModelError::NotFound(_) | ModelError::MissingFile { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        ModelError::NotADirectory(_) => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// An encode call that failed: the caller's options are `ValueError`, the rest `RuntimeError`.
pub fn from_embed(e: EmbedError) -> PyErr {
    let msg = one_line(&e);
    match e {
        EmbedError::InvalidOption { .. } | EmbedError::Unsupported(_) => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// An API model that cannot be used: its settings are `ValueError` (no key, bad URL or spec), a failed
/// request (the dimensions probe) `RuntimeError`.
pub fn from_provider(spec: &str, e: ProviderError) -> PyErr {
    let msg = format!("cannot use model '{spec}': {}", one_line(&e));
    match e {
        ProviderError::MissingKey { .. }
        | ProviderError::MissingBaseUrl { .. }
        | ProviderError::InvalidBaseUrl { .. }
        | ProviderError::InvalidSpec { .. } => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}
