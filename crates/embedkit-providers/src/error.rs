//! Why a provider call failed. Messages name the provider and, for HTTP failures, the status and the
//! provider's own message; they never contain the API key or request headers.

/// Why building or calling an API embedder failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No API key in the configuration or the environment.
    #[error("{provider}: no API key; set {env}")]
    MissingKey {
        /// The provider's name.
        provider: &'static str,
        /// The environment variable(s) to set.
        env: String,
    },
    /// The provider needs a base URL and none was given (Azure).
    #[error("{provider}: no endpoint; pass --base-url or set {env}")]
    MissingBaseUrl {
        /// The provider's name.
        provider: &'static str,
        /// The environment variable to set.
        env: &'static str,
    },
    /// The base URL is not an http(s) URL.
    #[error("{provider}: invalid base URL '{url}': {reason}")]
    InvalidBaseUrl {
        /// The provider's name.
        provider: &'static str,
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model spec names no model.
    #[error("invalid model spec '{spec}': {reason}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The API answered with an error status (after retrying, where the status is retryable).
    #[error("{provider}: HTTP {status} after {attempts} attempt{s}: {message}", s = plural(*attempts))]
    Http {
        /// The provider's name.
        provider: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The provider's error message (or the start of the body).
        message: String,
        /// Requests sent for this batch.
        attempts: u32,
    },
    /// No answer: timeouts, refused or reset connections, bodies cut short (after retrying).
    #[error("{provider}: request failed after {attempts} attempt{s}: {message}", s = plural(*attempts))]
    Transport {
        /// The provider's name.
        provider: &'static str,
        /// What went wrong, from the HTTP client.
        message: String,
        /// Requests sent for this batch.
        attempts: u32,
    },
    /// A success status whose body is not the documented format: malformed JSON, a wrong number of vectors,
    /// missing or repeated indexes, vectors of the wrong width. Not retried: the request was billed.
    #[error("{provider}: unexpected response: {reason}")]
    BadResponse {
        /// The provider's name.
        provider: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl From<ProviderError> for embedkit_core::EmbedError {
    fn from(e: ProviderError) -> Self {
        embedkit_core::EmbedError::Backend(Box::new(e))
    }
}
