//! The seam between the model pipeline and the code that runs the transformer.

/// A batch of sequences, concatenated without padding.
#[derive(Debug, Clone, Copy)]
pub struct TokenBatch<'a> {
    /// Token ids of all sequences, one after another.
    pub input_ids: &'a [u32],
    /// Token type ids, aligned with `input_ids`.
    pub type_ids: &'a [u32],
    /// Length of each sequence; they sum to `input_ids.len()`.
    pub seq_lens: &'a [usize],
    /// When set, sequence `s` attends only to its first `key_lens[s]` tokens (an attention mask that is 0 on
    /// a tail; every token still gets an output). ColBERT's [MASK] query expansion without attending to it.
    /// `None`: every token attends to the whole sequence.
    pub key_lens: Option<&'a [usize]>,
}

/// An error from a backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a transformer encoder: token ids in, last hidden states out.
pub trait Backend: Send + Sync {
    /// A short name for reports (e.g. `cpu-f32`).
    fn name(&self) -> &str;

    /// Identifies the backend's arithmetic, for [`Embedder::fingerprint`](embedkit_core::Embedder::fingerprint):
    /// two backends with equal fingerprints give the same vectors to float noise (e.g. `cpu-f32`, `cpu-int8`).
    fn fingerprint(&self) -> String {
        self.name().to_string()
    }

    /// The last hidden state of every token, `input_ids.len() × hidden_size`, row-major, in the batch's order.
    fn forward(&self, batch: &TokenBatch<'_>) -> Result<Vec<f32>, BackendError>;
}
