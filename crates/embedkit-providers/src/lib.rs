//! API embedding models — OpenAI (and any OpenAI-compatible server, Azure OpenAI), Cohere and Voyage — as
//! [`embedkit_core::Embedder`]s, so that the cache, eval, bench, index and serve work with them unchanged.
//!
//! One job: turn `embed(texts)` into the fewest requests each API's documented limits allow, send them in
//! parallel up to a concurrency limit, retry what may pass (429, 5xx, timeouts, broken connections, honouring
//! Retry-After), put the vectors back in input order, and count requests, tokens and cost.
//!
//! Keys never reach `Debug` output or errors. The HTTP client (ureq) logs only allow-listed headers at DEBUG;
//! its TRACE level is wire-level and unredacted, so an application that installs a logger should not enable
//! TRACE for `ureq` in production (embedkit's binary installs none).
//!
//! ```no_run
//! use embedkit_core::{Embedder, EncodeOptions};
//! use embedkit_providers::{ApiEmbedder, ProviderConfig, parse_spec};
//! let spec = "openai:text-embedding-3-small";
//! let (provider, _) = parse_spec(spec).unwrap();
//! let config = ProviderConfig::default().fill_from_env(provider, &|k| std::env::var(k).ok());
//! let model = ApiEmbedder::new(spec, &config)?;
//! let v = model.embed(&["a cat sat"], &EncodeOptions::default())?;
//! println!("{} dims, {:?}", v.dims(), model.usage());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod embedder;
mod error;
mod http;
pub mod models;
mod secret;
mod wire;

pub use embedder::{
    AZURE_API_VERSION, ApiEmbedder, CallHook, CallRecord, ProviderConfig, estimate_tokens,
};
pub use error::ProviderError;
pub use http::{RetryPolicy, retry_after, retryable_status};
pub use models::{Limits, ModelInfo, Provider, parse_spec};
pub use secret::Secret;
