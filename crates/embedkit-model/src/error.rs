//! Errors of model loading and encoding.

use std::path::PathBuf;

/// Why a model folder could not be loaded or used. Every variant names the file (and field) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model path does not exist.
    #[error("model folder '{0}' does not exist")]
    NotFound(PathBuf),
    /// The model path is a file, not a folder.
    #[error("'{0}' is not a model folder (it is a file)")]
    NotADirectory(PathBuf),
    /// Reading a file failed.
    #[error("cannot read '{path}': {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A JSON file is malformed or has fields of the wrong type.
    #[error("invalid JSON in '{path}': {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (with line and column).
        source: serde_json::Error,
    },
    /// A required file is missing.
    #[error("'{dir}' has no {what}")]
    MissingFile {
        /// The folder searched.
        dir: PathBuf,
        /// What was looked for, e.g. "config.json".
        what: String,
    },
    /// The folder has PyTorch pickles but no safetensors.
    #[error(
        "'{0}' has only pytorch_model.bin; embedkit reads safetensors only — convert it with transformers' \
         model.save_pretrained(dir, safe_serialization=True)"
    )]
    PytorchOnly(PathBuf),
    /// A safetensors file cannot be parsed (truncated, corrupt, wrong header).
    #[error("invalid safetensors file '{path}': {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// config.json names an architecture embedkit has no encoder for.
    #[error(
        "'{path}': unsupported architecture model_type '{model_type}' (supported: bert, roberta, xlm-roberta, camembert, mpnet, modernbert, qwen3, qwen2, mistral)"
    )]
    UnknownArchitecture {
        /// config.json.
        path: PathBuf,
        /// Its model_type.
        model_type: String,
    },
    /// The folder is a cross-encoder (a sequence-classification model): it scores pairs, it makes no vectors.
    #[error(
        "'{path}' is a cross-encoder ({architecture}): it scores (query, document) pairs and gives no \
         embeddings — use `embedkit rerank --model …` (or the server's /rerank and /predict)"
    )]
    IsCrossEncoder {
        /// The model folder.
        path: PathBuf,
        /// config.json's class.
        architecture: String,
    },
    /// A cross-encoder was asked for, but config.json names no `*ForSequenceClassification` class.
    #[error(
        "'{path}' is not a cross-encoder: its architectures are [{architectures}], none a \
         *ForSequenceClassification (supported: BertForSequenceClassification, \
         XLMRobertaForSequenceClassification, RobertaForSequenceClassification, \
         CamembertForSequenceClassification, ModernBertForSequenceClassification)"
    )]
    NotCrossEncoder {
        /// config.json.
        path: PathBuf,
        /// Its `architectures`, joined.
        architectures: String,
    },
    /// config.json names a sequence-classification class embedkit has no head for.
    #[error(
        "'{path}': unsupported cross-encoder architecture '{architecture}' (supported: \
         BertForSequenceClassification, XLMRobertaForSequenceClassification, RobertaForSequenceClassification, \
         CamembertForSequenceClassification, ModernBertForSequenceClassification)"
    )]
    UnsupportedCrossEncoder {
        /// config.json.
        path: PathBuf,
        /// The class.
        architecture: String,
    },
    /// A config field is missing or has an unusable value.
    #[error("'{path}': field '{field}' {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the architecture needs is not in the weights.
    #[error("weights in '{dir}' lack tensor '{name}'")]
    MissingTensor {
        /// The model folder.
        dir: PathBuf,
        /// The tensor's name.
        name: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("tensor '{name}' has shape {found:?}, config.json implies {expected:?}")]
    TensorShape {
        /// The tensor's name.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor's bytes could not be read (the file shrank after its header was read, or the disk failed).
    #[error("cannot read tensor '{name}' from '{path}': {source}")]
    TensorRead {
        /// The safetensors file.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tensor is stored in a dtype embedkit cannot read as floats.
    #[error("tensor '{name}' has dtype {dtype}; expected F32, F16 or BF16")]
    TensorDtype {
        /// The tensor's name.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// The folder has neither tokenizer.json nor vocab.txt.
    #[error("'{0}' has no tokenizer (tokenizer.json, or vocab.txt for BERT)")]
    MissingTokenizer(PathBuf),
    /// The tokenizer file cannot be loaded.
    #[error("cannot load tokenizer '{path}': {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizers crate's message.
        message: String,
    },
    /// modules.json names a module embedkit cannot run.
    #[error("'{path}': unsupported module type '{module_type}'")]
    UnsupportedModule {
        /// modules.json.
        path: PathBuf,
        /// The module's type.
        module_type: String,
    },
    /// The backend could not be built from the weights.
    #[error("cannot build the model backend: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            source,
        }
    }
}
