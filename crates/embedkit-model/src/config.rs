//! The transformer's config.json, reduced to what an encoder backend needs.

use crate::ModelError;
use crate::files::read_json;
use serde::Deserialize;
use std::path::Path;

/// The encoder families embedkit runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// BERT and its descendants with absolute positions (MiniLM, bge, e5, gte).
    Bert,
    /// RoBERTa / XLM-RoBERTa / CamemBERT: BERT's layers, positions offset past the padding index.
    XlmRoberta,
    /// MPNet: no token types, T5-style relative position buckets added to every layer's attention.
    MPNet,
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Architecture::Bert => "BERT",
            Architecture::XlmRoberta => "XLM-RoBERTa",
            Architecture::MPNet => "MPNet",
        })
    }
}

/// The feed-forward activation (config.json `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` with erf (`gelu`).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`.
    Silu,
}

/// Everything about the encoder's shape that a backend needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Which encoder family.
    pub architecture: Architecture,
    /// config.json's `model_type`, as written.
    pub model_type: String,
    /// Width of the hidden states.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f32,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Rows of the absolute position embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token type embedding table (0 when the model has none).
    pub type_vocab_size: usize,
    /// First position id: 0 for BERT, `pad_token_id + 1` for RoBERTa-style and MPNet models.
    pub position_offset: usize,
    /// Relative attention buckets (MPNet only).
    pub relative_attention_num_buckets: Option<usize>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    pad_token_id: Option<usize>,
    relative_attention_num_buckets: Option<usize>,
    position_embedding_type: Option<String>,
}

impl EncoderConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let raw: RawConfig = read_json(path)?;
        let model_type = raw.model_type.clone().unwrap_or_default();
        let architecture = match model_type.as_str() {
            "bert" => Architecture::Bert,
            "roberta" | "xlm-roberta" | "camembert" => Architecture::XlmRoberta,
            "mpnet" => Architecture::MPNet,
            _ => {
                return Err(ModelError::UnknownArchitecture {
                    path: path.to_path_buf(),
                    model_type: if model_type.is_empty() {
                        "(missing)".into()
                    } else {
                        model_type
                    },
                });
            }
        };
        let field = |name: &str, v: Option<usize>| {
            v.filter(|&x| x > 0).ok_or_else(|| ModelError::Config {
                path: path.to_path_buf(),
                field: name.to_string(),
                message: "is missing or zero".into(),
            })
        };
        let hidden_size = field("hidden_size", raw.hidden_size)?;
        let num_heads = field("num_attention_heads", raw.num_attention_heads)?;
        if hidden_size % num_heads != 0 {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                field: "num_attention_heads".into(),
                message: format!("({num_heads}) does not divide hidden_size ({hidden_size})"),
            });
        }
        if let Some(kind) = raw.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                field: "position_embedding_type".into(),
                message: format!("is '{kind}'; only 'absolute' is supported"),
            });
        }
        let act_name = raw.hidden_act.as_deref().unwrap_or("gelu");
        let activation = match act_name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(ModelError::Config {
                    path: path.to_path_buf(),
                    field: "hidden_act".into(),
                    message: format!("'{other}' is not supported (gelu, gelu_new, relu, silu)"),
                });
            }
        };
        let pad = raw.pad_token_id.unwrap_or(match architecture {
            Architecture::Bert => 0,
            _ => 1,
        });
        let (position_offset, type_vocab_size) = match architecture {
            Architecture::Bert => (0, raw.type_vocab_size.unwrap_or(2)),
            Architecture::XlmRoberta => (pad + 1, raw.type_vocab_size.unwrap_or(1)),
            Architecture::MPNet => (pad + 1, 0),
        };
        Ok(EncoderConfig {
            architecture,
            model_type,
            hidden_size,
            num_layers: field("num_hidden_layers", raw.num_hidden_layers)?,
            num_heads,
            intermediate_size: field("intermediate_size", raw.intermediate_size)?,
            activation,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(1e-12) as f32,
            vocab_size: field("vocab_size", raw.vocab_size)?,
            max_position_embeddings: field("max_position_embeddings", raw.max_position_embeddings)?,
            type_vocab_size,
            position_offset,
            relative_attention_num_buckets: match architecture {
                Architecture::MPNet => Some(raw.relative_attention_num_buckets.unwrap_or(32)),
                _ => None,
            },
        })
    }

    /// The most tokens (special tokens included) one sequence can have.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}
