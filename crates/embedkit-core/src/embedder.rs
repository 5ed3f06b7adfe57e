//! The interface every source of vectors implements.

use crate::Embeddings;

/// What a caller asks of an encode call. `None` everywhere means "as the model says".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodeOptions {
    /// Texts per forward pass; `None` uses the embedder's default (32, like sentence-transformers).
    pub batch_size: Option<usize>,
    /// L2-normalize the output; `None` follows the model (its modules.json has a Normalize module or not).
    pub normalize: Option<bool>,
    /// Keep only the first `truncate_dim` dimensions (Matryoshka). Truncation happens before normalization, so
    /// a normalized truncated vector has unit length.
    pub truncate_dim: Option<usize>,
    /// A literal prompt prepended to every text. `Some("")` means explicitly no prompt, overriding the
    /// model's default prompt. Takes precedence over `prompt_name`.
    pub prompt: Option<String>,
    /// The name of one of the model's prompts (config_sentence_transformers.json), e.g. `query`.
    pub prompt_name: Option<String>,
    /// Cap on tokens per text, at most the model's own limit; longer texts are truncated, never rejected.
    pub max_length: Option<usize>,
}

/// Token-level vectors of one text: one row per token, special tokens included.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEmbeddings {
    /// The token ids fed to the model.
    pub token_ids: Vec<u32>,
    /// `token_ids.len() × dims` vectors.
    pub vectors: Embeddings,
}

/// Why an encode call failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// An option the caller set cannot be honoured (names the option and why).
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's name as the user wrote it (e.g. `prompt_name`).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// This embedder cannot do what was asked (e.g. token vectors from an API model).
    #[error("{0}")]
    Unsupported(String),
    /// Tokenizing a text failed.
    #[error("tokenizing text {index} failed: {message}")]
    Tokenize {
        /// Index of the text in the caller's list.
        index: usize,
        /// The tokenizer's message.
        message: String,
    },
    /// The model backend failed.
    #[error("model backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Work an embedder has billed or counted since it was created: what API providers charge for, so that bench
/// and eval reports can put cost next to local compute time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// HTTP requests sent (retries included).
    pub requests: u64,
    /// Input tokens as the provider counted them (or estimated, where it does not say).
    pub input_tokens: u64,
    /// Cost in US dollars from the provider's price table; `None` where no price is known.
    pub cost_usd: Option<f64>,
}

/// Anything that turns texts into vectors: a local model, an API provider, a cache in front of either.
///
/// Implementations return one row per input text, in input order.
pub trait Embedder: Send + Sync {
    /// A short name for logs and reports (e.g. `all-MiniLM-L6-v2`).
    fn name(&self) -> &str;

    /// Dimensions of the vectors [`Embedder::embed`] returns without `truncate_dim`.
    fn dims(&self) -> usize;

    /// Identifies everything about this embedder that changes its vectors — weights, pooling, Dense layers,
    /// normalization, token limit — but not the options of one call. Cache keys and index headers use it; two
    /// embedders with equal fingerprints give equal vectors for equal inputs and options.
    fn fingerprint(&self) -> String {
        self.name().to_string()
    }

    /// Embeds `texts` into one vector each.
    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError>;

    /// Token-level vectors for each text (ColBERT-style late interaction). Not every embedder has them.
    fn embed_tokens(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<TokenEmbeddings>, EmbedError> {
        let _ = (texts, options);
        Err(EmbedError::Unsupported(format!(
            "{} does not produce token-level vectors",
            self.name()
        )))
    }

    /// Requests, tokens and cost so far, for embedders that are billed (API providers). Local models return
    /// `None`.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

impl<E: Embedder + ?Sized> Embedder for std::sync::Arc<E> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn dims(&self) -> usize {
        (**self).dims()
    }
    fn fingerprint(&self) -> String {
        (**self).fingerprint()
    }
    fn embed(&self, texts: &[&str], options: &EncodeOptions) -> Result<Embeddings, EmbedError> {
        (**self).embed(texts, options)
    }
    fn embed_tokens(
        &self,
        texts: &[&str],
        options: &EncodeOptions,
    ) -> Result<Vec<TokenEmbeddings>, EmbedError> {
        (**self).embed_tokens(texts, options)
    }
    fn usage(&self) -> Option<Usage> {
        (**self).usage()
    }
}
