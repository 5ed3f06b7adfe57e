//! Reading embedding models in the HuggingFace / sentence-transformers folder layout and running them:
//! config.json and modules.json, safetensors weights, the tokenizer, batch planning, pooling, Dense and
//! Normalize modules, prompts and Matryoshka truncation — everything of `SentenceTransformer.encode` except
//! the transformer's arithmetic, which a [`Backend`] does. ColBERT folders (PyLate, Stanford) load too: their
//! projection head, markers and query expansion drive [`embedkit_core::Embedder::embed_tokens`].
//!
//! The crate knows nothing of HTTP or caches; where a folder comes from is `embedkit-sources`' job.

mod backend;
mod batch;
mod colbert;
mod config;
mod cross_encoder;
mod cross_head;
mod decoder;
mod embedder;
mod error;
mod files;
mod layout;
mod pooling;
mod prepared;
mod tensor_files;
mod tokenizer;
mod weights;

pub use backend::{Backend, BackendError, TokenBatch};
pub use batch::plan_batches;
pub use colbert::{ColbertHead, ColbertLayout};
pub use config::{Activation, Architecture, DecoderConfig, EncoderConfig, ModernBertConfig};
pub use cross_encoder::{
    CrossEncoder, CrossEncoderInfo, PredictOptions, Ranked, sequence_classification_class,
};
pub use cross_head::{ClassificationHead, HeadPooling, SUPPORTED_CROSS_ENCODERS, activation_name};
pub use embedder::{DEFAULT_BATCH_SIZE, LocalEmbedder, ModelInfo};
pub use error::ModelError;
pub use layout::{DenseActivation, PostPoolingStep, SentenceTransformerLayout};
pub use pooling::{PoolingConfig, PoolingMode};
pub use prepared::{PreparedText, TokenInfo};
pub use tokenizer::{Encoded, TextTokenizer};
pub use weights::{
    EncoderReader, EncoderWeights, LayerNorm, LayerWeights, Linear, SafetensorsFiles, Tensor,
};
