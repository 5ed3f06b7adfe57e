//! What a decoder embedder (Qwen3, Qwen2, Mistral) adds to the shared config fields: grouped-query attention,
//! rotary positions, RMSNorm, and which layers attend through a sliding window.

use crate::ModelError;
use crate::config::Architecture;
use crate::files::read_json;
use serde::Deserialize;
use std::path::Path;

/// The decoder-only fields of config.json.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Key/value heads (`num_key_value_heads`); each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head (`head_dim`, else `hidden_size / num_attention_heads`). Qwen3's query heads together
    /// may be wider than the hidden state (0.6B: 16 × 128 = 2048 against 1024).
    pub head_dim: usize,
    /// RoPE base (`rope_parameters.rope_theta`, or `rope_theta` in older configs).
    pub rope_theta: f64,
    /// RMSNorm epsilon (`rms_norm_eps`).
    pub rms_norm_eps: f32,
    /// Whether each head's queries and keys pass an RMSNorm before RoPE (Qwen3's `q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// Per layer: `Some(w)` when token i attends only to keys j with `i − j < w` (transformers'
    /// sliding-window causal mask), `None` for full causal attention.
    pub sliding_window: Vec<Option<usize>>,
}

#[derive(Deserialize)]
struct RawRope {
    rope_type: Option<String>,
    rope_theta: Option<f64>,
}

#[derive(Deserialize)]
struct RawDecoder {
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RawRope>,
    rope_scaling: Option<serde_json::Value>,
    rms_norm_eps: Option<f64>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
    max_window_layers: Option<usize>,
    layer_types: Option<Vec<String>>,
}

impl DecoderConfig {
    /// Reads the decoder fields of `path` (config.json) for a model of `architecture`.
    pub(crate) fn from_file(path: &Path, architecture: Architecture) -> Result<Self, ModelError> {
        let raw: RawDecoder = read_json(path)?;
        let bad = |field: &str, message: String| ModelError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message,
        };
        let positive = |field: &str, v: Option<usize>| {
            v.filter(|&x| x > 0)
                .ok_or_else(|| bad(field, "is missing or zero".into()))
        };
        let heads = positive("num_attention_heads", raw.num_attention_heads)?;
        let hidden = positive("hidden_size", raw.hidden_size)?;
        let layers = positive("num_hidden_layers", raw.num_hidden_layers)?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(heads);
        if num_kv_heads == 0 || heads % num_kv_heads != 0 {
            return Err(bad(
                "num_key_value_heads",
                format!("({num_kv_heads}) must divide num_attention_heads ({heads})"),
            ));
        }
        let head_dim = match raw.head_dim {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => {
                return Err(bad(
                    "num_attention_heads",
                    format!(
                        "({heads}) does not divide hidden_size ({hidden}) and head_dim is not set"
                    ),
                ));
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(
                "head_dim",
                format!("is {head_dim}; rotary positions need an even, non-zero width"),
            ));
        }
        // Scaled RoPE variants (yarn, dynamic, llama3…) change the frequencies; only the plain one is here.
        let rope_type = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_type.clone())
            .or_else(|| {
                raw.rope_scaling.as_ref().and_then(|s| {
                    s.get("rope_type")
                        .or_else(|| s.get("type"))
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                })
            });
        if let Some(t) = rope_type.as_deref()
            && t != "default"
        {
            return Err(bad(
                "rope_parameters",
                format!("has rope_type '{t}'; only 'default' is supported"),
            ));
        }
        let rope_theta = raw
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .or(raw.rope_theta)
            .unwrap_or(10_000.0);
        let sliding_window = match (&raw.layer_types, raw.sliding_window) {
            (Some(types), window) => {
                if types.len() != layers {
                    return Err(bad(
                        "layer_types",
                        format!("has {} entries for {layers} layers", types.len()),
                    ));
                }
                types
                    .iter()
                    .map(|t| match (t.as_str(), window) {
                        ("full_attention", _) => Ok(None),
                        ("sliding_attention", Some(w)) if w > 0 => Ok(Some(w)),
                        ("sliding_attention", _) => Err(bad(
                            "sliding_window",
                            "is missing or zero while layer_types has sliding_attention".into(),
                        )),
                        (other, _) => Err(bad(
                            "layer_types",
                            format!("has '{other}' (full_attention or sliding_attention)"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            // Mistral slides on every layer when sliding_window is set.
            (None, Some(w)) if architecture == Architecture::Mistral && w > 0 => {
                vec![Some(w); layers]
            }
            // Qwen2/Qwen3 without layer_types: layers from max_window_layers on slide, if enabled at all.
            (None, Some(w)) if raw.use_sliding_window == Some(true) && w > 0 => {
                let from = raw.max_window_layers.unwrap_or(layers);
                (0..layers).map(|l| (l >= from).then_some(w)).collect()
            }
            (None, _) => vec![None; layers],
        };
        Ok(DecoderConfig {
            num_kv_heads,
            head_dim,
            rope_theta,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            qk_norm: architecture == Architecture::Qwen3,
            sliding_window,
        })
    }
}
