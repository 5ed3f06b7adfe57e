//! The transformer's config.json, reduced to what an encoder backend needs.

use crate::ModelError;
pub use crate::decoder::DecoderConfig;
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
    /// ModernBERT: rotary positions, GeGLU, pre-norm LayerNorms without bias, alternating global and
    /// sliding-window attention (see [`ModernBertConfig`]).
    ModernBert,
    /// Qwen3 decoder (Qwen3-Embedding): causal grouped-query attention, RoPE, RMSNorm, SwiGLU, and an RMSNorm
    /// on every head's queries and keys (see [`DecoderConfig`]).
    Qwen3,
    /// Qwen2 decoder (gte-Qwen2): Qwen3's layers without the per-head norms, with q/k/v biases.
    Qwen2,
    /// Mistral decoder (e5-mistral): Qwen2's layers without biases, sliding-window attention.
    Mistral,
}

impl Architecture {
    /// Whether this is a causal decoder (run by the decoder path, pooled from its last token).
    pub fn is_decoder(self) -> bool {
        matches!(
            self,
            Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Mistral
        )
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Architecture::Bert => "BERT",
            Architecture::XlmRoberta => "XLM-RoBERTa",
            Architecture::MPNet => "MPNet",
            Architecture::ModernBert => "ModernBERT",
            Architecture::Qwen3 => "Qwen3",
            Architecture::Qwen2 => "Qwen2",
            Architecture::Mistral => "Mistral",
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
    /// ModernBERT's rotary and attention-pattern settings (ModernBERT only).
    pub modernbert: Option<ModernBertConfig>,
    /// Grouped-query attention, RoPE and RMSNorm settings (decoders only).
    pub decoder: Option<DecoderConfig>,
}

/// What ModernBERT adds to the shared fields: rotary bases and which layers attend only to a window.
#[derive(Debug, Clone, PartialEq)]
pub struct ModernBertConfig {
    /// RoPE base of the global (full-attention) layers (`global_rope_theta`).
    pub global_rope_theta: f32,
    /// RoPE base of the sliding-window layers (`local_rope_theta`).
    pub local_rope_theta: f32,
    /// Per layer: true when it attends only to tokens within `window` positions (`layer_types`, else every
    /// layer whose index is not a multiple of `global_attn_every_n_layers`).
    pub sliding_layers: Vec<bool>,
    /// Half the `local_attention` width: a sliding layer's token i attends to j with |i − j| ≤ window.
    pub window: usize,
    /// Whether the LayerNorms have a bias (`norm_bias`).
    pub norm_bias: bool,
    /// Whether Wqkv and the attention's Wo have biases (`attention_bias`).
    pub attention_bias: bool,
    /// Whether the MLP's Wi and Wo have biases (`mlp_bias`).
    pub mlp_bias: bool,
}

#[derive(Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    rope_theta: Option<f64>,
}

/// ModernBERT's own config.json fields, in both the hub's form (`global_rope_theta`, …) and the one
/// transformers ≥ 5 writes (`layer_types`, `rope_parameters`).
#[derive(Deserialize)]
struct RawModernBert {
    global_rope_theta: Option<f64>,
    local_rope_theta: Option<f64>,
    global_attn_every_n_layers: Option<usize>,
    local_attention: Option<usize>,
    layer_types: Option<Vec<String>>,
    rope_parameters: Option<std::collections::HashMap<String, RawRope>>,
    norm_bias: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    norm_eps: Option<f64>,
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
    hidden_activation: Option<String>,
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
            "modernbert" => Architecture::ModernBert,
            "qwen3" => Architecture::Qwen3,
            "qwen2" => Architecture::Qwen2,
            "mistral" => Architecture::Mistral,
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
        // A decoder's heads may be wider than hidden / heads (head_dim, checked with its own fields).
        if hidden_size % num_heads != 0 && !architecture.is_decoder() {
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
        // ModernBERT names it hidden_activation.
        let act_name = raw
            .hidden_act
            .as_deref()
            .or(raw.hidden_activation.as_deref())
            .unwrap_or("gelu");
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
            Architecture::ModernBert => (0, 0),
            Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Mistral => (0, 0),
        };
        let (modernbert, layer_norm_eps) = match architecture {
            Architecture::ModernBert => {
                let num_layers = field("num_hidden_layers", raw.num_hidden_layers)?;
                let (mb, eps) = ModernBertConfig::from_file(path, num_layers)?;
                (Some(mb), eps)
            }
            _ => (None, raw.layer_norm_eps.unwrap_or(1e-12) as f32),
        };
        let decoder = if architecture.is_decoder() {
            Some(DecoderConfig::from_file(path, architecture)?)
        } else {
            None
        };
        let layer_norm_eps = decoder.as_ref().map_or(layer_norm_eps, |d| d.rms_norm_eps);
        Ok(EncoderConfig {
            architecture,
            model_type,
            hidden_size,
            num_layers: field("num_hidden_layers", raw.num_hidden_layers)?,
            num_heads,
            intermediate_size: field("intermediate_size", raw.intermediate_size)?,
            activation,
            layer_norm_eps,
            vocab_size: field("vocab_size", raw.vocab_size)?,
            max_position_embeddings: field("max_position_embeddings", raw.max_position_embeddings)?,
            type_vocab_size,
            position_offset,
            relative_attention_num_buckets: match architecture {
                Architecture::MPNet => Some(raw.relative_attention_num_buckets.unwrap_or(32)),
                _ => None,
            },
            modernbert,
            decoder,
        })
    }

    /// The most tokens (special tokens included) one sequence can have.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        match &self.decoder {
            Some(d) => d.head_dim,
            None => self.hidden_size / self.num_heads,
        }
    }
}

impl ModernBertConfig {
    /// Reads ModernBERT's fields from `path` (config.json) for a model of `num_layers` layers; also returns
    /// its LayerNorm epsilon (`norm_eps`).
    fn from_file(path: &Path, num_layers: usize) -> Result<(Self, f32), ModelError> {
        let raw: RawModernBert = read_json(path)?;
        let bad = |field: &str, message: String| ModelError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        // transformers ≥ 5 writes layer_types; the hub's configs have global_attn_every_n_layers.
        let sliding_layers = match raw.layer_types {
            Some(types) => {
                if types.len() != num_layers {
                    return Err(bad(
                        "layer_types",
                        format!("has {} entries for {num_layers} layers", types.len()),
                    ));
                }
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "sliding_attention" => Ok(true),
                        "full_attention" => Ok(false),
                        other => Err(bad(
                            "layer_types",
                            format!("has '{other}' (full_attention or sliding_attention)"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let every = raw.global_attn_every_n_layers.unwrap_or(3);
                if every == 0 {
                    return Err(bad("global_attn_every_n_layers", "is zero".into()));
                }
                (0..num_layers).map(|l| l % every != 0).collect()
            }
        };
        let theta = |kind: &str, legacy: Option<f64>, default: f64| -> Result<f32, ModelError> {
            match raw.rope_parameters.as_ref().and_then(|p| p.get(kind)) {
                Some(rope) => {
                    if let Some(t) = rope.rope_type.as_deref()
                        && t != "default"
                    {
                        return Err(bad(
                            "rope_parameters",
                            format!("{kind} has rope_type '{t}'; only 'default' is supported"),
                        ));
                    }
                    Ok(rope.rope_theta.or(legacy).unwrap_or(default) as f32)
                }
                None => Ok(legacy.unwrap_or(default) as f32),
            }
        };
        let local_attention = raw.local_attention.unwrap_or(128);
        Ok((
            ModernBertConfig {
                global_rope_theta: theta("full_attention", raw.global_rope_theta, 160_000.0)?,
                local_rope_theta: theta("sliding_attention", raw.local_rope_theta, 10_000.0)?,
                sliding_layers,
                window: local_attention / 2,
                norm_bias: raw.norm_bias.unwrap_or(false),
                attention_bias: raw.attention_bias.unwrap_or(false),
                mlp_bias: raw.mlp_bias.unwrap_or(false),
            },
            raw.norm_eps.unwrap_or(1e-5) as f32,
        ))
    }
}
