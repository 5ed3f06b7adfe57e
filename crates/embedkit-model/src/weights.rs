//! Gathering an encoder's safetensors weights into its named parts, all at once ([`EncoderWeights::load`]) or
//! layer by layer ([`EncoderReader`]).

use crate::ModelError;
use crate::config::{Architecture, EncoderConfig};
pub use crate::tensor_files::SafetensorsFiles;

/// A dense f32 tensor, row-major. Linear weights keep PyTorch's `[out_features, in_features]` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// A linear layer: `y = x·Wᵀ + b`, `weight` is `[out, in]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Tensor,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<Tensor>,
}

/// LayerNorm's scale and shift.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerNorm {
    /// γ, `[hidden]`.
    pub weight: Tensor,
    /// β, `[hidden]`.
    pub bias: Tensor,
}

/// One transformer layer's weights, in the same roles for every architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Attention output projection.
    pub attention_output: Linear,
    /// LayerNorm after attention + residual.
    pub attention_norm: LayerNorm,
    /// Feed-forward up projection.
    pub intermediate: Linear,
    /// Feed-forward down projection.
    pub output: Linear,
    /// LayerNorm after feed-forward + residual.
    pub output_norm: LayerNorm,
}

/// All of an encoder's weights, named by role rather than by checkpoint key.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderWeights {
    /// `[vocab, hidden]`.
    pub word_embeddings: Tensor,
    /// `[max_positions, hidden]`.
    pub position_embeddings: Tensor,
    /// `[type_vocab, hidden]`, absent for MPNet.
    pub token_type_embeddings: Option<Tensor>,
    /// LayerNorm after the embedding sum.
    pub embedding_norm: LayerNorm,
    /// The transformer layers.
    pub layers: Vec<LayerWeights>,
    /// MPNet's `[num_buckets, num_heads]` relative attention bias.
    pub relative_attention_bias: Option<Tensor>,
}

impl EncoderWeights {
    /// Gathers and shape-checks the encoder's weights for `config` from `files`, all layers at once. A backend
    /// that converts the weights should rather read them layer by layer with [`EncoderReader`], so that it
    /// never holds every f32 tensor beside its converted copies.
    pub fn load(files: &SafetensorsFiles, config: &EncoderConfig) -> Result<Self, ModelError> {
        let reader = EncoderReader::new(files, config)?;
        let mut weights = reader.without_layers()?;
        weights.layers = (0..config.num_layers)
            .map(|l| reader.layer(l))
            .collect::<Result<_, _>>()?;
        Ok(weights)
    }
}

/// Reads a BERT-shaped encoder's weights (BERT, XLM-RoBERTa, MPNet) part by part, shape-checked against the
/// config, so a backend can convert each layer and drop its f32 tensors before reading the next.
pub struct EncoderReader<'a> {
    files: &'a SafetensorsFiles,
    config: &'a EncoderConfig,
    /// The checkpoint's name prefix (`""`, `bert.`, …).
    prefix: String,
}

impl<'a> EncoderReader<'a> {
    /// A reader of `config`'s encoder in `files`; an error for architectures whose layers are not BERT-shaped,
    /// or when the word embeddings are missing.
    pub fn new(files: &'a SafetensorsFiles, config: &'a EncoderConfig) -> Result<Self, ModelError> {
        if config.architecture == Architecture::ModernBert {
            // ModernBERT's layers have other parts (fused Wqkv, GeGLU, no post-norms); its backend reads the
            // safetensors itself (see `LocalEmbedder::load_with`).
            return Err(ModelError::MissingTensor {
                dir: files.dir.clone(),
                name: "encoder.layer.0.* (a ModernBERT folder has no BERT-shaped layers)".into(),
            });
        }
        if config.architecture.is_decoder() {
            // A decoder's layers (gate/up/down, q/k/v with grouped heads, RMSNorms) are not BERT's; its backend
            // reads them from the safetensors itself (see `LocalEmbedder::load_with`).
            return Err(ModelError::MissingTensor {
                dir: files.dir.clone(),
                name: format!(
                    "encoder.layer.0.* (a {} folder has decoder layers: load it with embedkit_cpu::load_model)",
                    config.architecture
                ),
            });
        }
        Ok(Self {
            files,
            config,
            prefix: find_prefix(files)?,
        })
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        self.files
            .get_shaped(&format!("{}{name}", self.prefix), shape)
    }

    fn norm(&self, base: &str) -> Result<LayerNorm, ModelError> {
        let h = self.config.hidden_size;
        // Old TF-converted checkpoints call LayerNorm's parameters gamma/beta.
        let (w, b) = if self
            .files
            .contains(&format!("{}{base}.weight", self.prefix))
        {
            ("weight", "bias")
        } else {
            ("gamma", "beta")
        };
        Ok(LayerNorm {
            weight: self.get(&format!("{base}.{w}"), &[h])?,
            bias: self.get(&format!("{base}.{b}"), &[h])?,
        })
    }

    fn linear(&self, base: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        let bias_name = format!("{}{base}.bias", self.prefix);
        Ok(Linear {
            weight: self.get(&format!("{base}.weight"), &[out, inp])?,
            bias: if self.files.contains(&bias_name) {
                Some(self.files.get_shaped(&bias_name, &[out])?)
            } else {
                None
            },
        })
    }

    /// Transformer layer `l`'s weights.
    pub fn layer(&self, l: usize) -> Result<LayerWeights, ModelError> {
        let (h, i_size) = (self.config.hidden_size, self.config.intermediate_size);
        let p = format!("encoder.layer.{l}");
        Ok(match self.config.architecture {
            Architecture::Bert | Architecture::XlmRoberta => LayerWeights {
                query: self.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: self.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: self.linear(&format!("{p}.attention.self.value"), h, h)?,
                attention_output: self.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: self.norm(&format!("{p}.attention.output.LayerNorm"))?,
                intermediate: self.linear(&format!("{p}.intermediate.dense"), i_size, h)?,
                output: self.linear(&format!("{p}.output.dense"), h, i_size)?,
                output_norm: self.norm(&format!("{p}.output.LayerNorm"))?,
            },
            Architecture::MPNet => LayerWeights {
                query: self.linear(&format!("{p}.attention.attn.q"), h, h)?,
                key: self.linear(&format!("{p}.attention.attn.k"), h, h)?,
                value: self.linear(&format!("{p}.attention.attn.v"), h, h)?,
                attention_output: self.linear(&format!("{p}.attention.attn.o"), h, h)?,
                attention_norm: self.norm(&format!("{p}.attention.LayerNorm"))?,
                intermediate: self.linear(&format!("{p}.intermediate.dense"), i_size, h)?,
                output: self.linear(&format!("{p}.output.dense"), h, i_size)?,
                output_norm: self.norm(&format!("{p}.output.LayerNorm"))?,
            },
            Architecture::ModernBert => unreachable!("refused by EncoderReader::new"),
            Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Mistral => {
                unreachable!("decoders refused by EncoderReader::new")
            }
        })
    }

    /// Everything but the transformer layers (embeddings, their norm, MPNet's relative attention bias), as
    /// [`EncoderWeights`] with `layers` empty.
    pub fn without_layers(&self) -> Result<EncoderWeights, ModelError> {
        let config = self.config;
        let h = config.hidden_size;
        let token_type_embeddings = if config.type_vocab_size > 0 {
            Some(self.get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?)
        } else {
            None
        };
        let relative_attention_bias = match config.relative_attention_num_buckets {
            Some(buckets) => Some(self.get(
                "encoder.relative_attention_bias.weight",
                &[buckets, config.num_heads],
            )?),
            None => None,
        };
        Ok(EncoderWeights {
            word_embeddings: self
                .get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: self.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings,
            embedding_norm: self.norm("embeddings.LayerNorm")?,
            layers: Vec::new(),
            relative_attention_bias,
        })
    }
}

/// Checkpoints name the encoder's tensors with or without a model prefix (`bert.`, `roberta.`, …) depending on
/// which head class saved them; find the one this file uses.
fn find_prefix(files: &SafetensorsFiles) -> Result<String, ModelError> {
    files.prefix_of("embeddings.word_embeddings.weight")
}

impl SafetensorsFiles {
    /// The shortest prefix (`""`, `model.`, `bert.`, …) under which tensor `key` exists: checkpoints name the
    /// same tensors with or without the head class's prefix.
    pub fn prefix_of(&self, key: &str) -> Result<String, ModelError> {
        let mut found: Vec<String> = self
            .names()
            .filter_map(|n| n.strip_suffix(key).map(str::to_string))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .collect();
        found.sort_by_key(String::len);
        found
            .into_iter()
            .next()
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: key.to_string(),
            })
    }
}
