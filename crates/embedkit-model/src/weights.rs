//! Reading safetensors weights (single file or sharded) and gathering them into the encoder's named parts.

use crate::ModelError;
use crate::config::{Architecture, EncoderConfig};
use crate::files::read_json;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

/// A dense f32 tensor, row-major. Linear weights keep PyTorch's `[out_features, in_features]` layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// The safetensors files of one model, memory-mapped, with a name → file map.
pub struct SafetensorsFiles {
    dir: PathBuf,
    maps: Vec<(PathBuf, Mmap)>,
    /// Tensor name → index into `maps`.
    index: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

impl SafetensorsFiles {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self, ModelError> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.is_file() {
            vec![single]
        } else if index_path.is_file() {
            let index: ShardIndex = read_json(&index_path)?;
            let mut shards: Vec<String> = index.weight_map.into_values().collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if dir.join("pytorch_model.bin").is_file()
            || dir.join("pytorch_model.bin.index.json").is_file()
        {
            return Err(ModelError::PytorchOnly(dir.to_path_buf()));
        } else {
            return Err(ModelError::MissingFile {
                dir: dir.to_path_buf(),
                what: "weights (model.safetensors or model.safetensors.index.json)".into(),
            });
        };
        Self::open_files(dir, files)
    }

    /// Opens a single safetensors file (e.g. a Dense module's weights).
    pub fn open_file(path: &Path) -> Result<Self, ModelError> {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::open_files(&dir, vec![path.to_path_buf()])
    }

    fn open_files(dir: &Path, files: Vec<PathBuf>) -> Result<Self, ModelError> {
        let mut maps = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: the mapping is read-only; a model file being rewritten under a running process is outside
            // what any loader can defend against, and safetensors validates offsets against the map's length.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            maps.push((path, map));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            maps,
            index,
        })
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// All tensor names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Total number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.maps
            .iter()
            .filter_map(|(_, m)| SafeTensors::deserialize(m).ok())
            .map(|st| {
                st.tensors()
                    .iter()
                    .map(|(_, v)| v.shape().iter().product::<usize>())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Reads tensor `name` as f32 (F16 and BF16 are widened).
    pub fn get(&self, name: &str) -> Result<Tensor, ModelError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                dir: self.dir.clone(),
                name: name.to_string(),
            })?;
        let (path, map) = &self.maps[i];
        let st = SafeTensors::deserialize(map).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let view = st.tensor(name).map_err(|e| ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::TensorDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(Tensor {
            shape: view.shape().to_vec(),
            data,
        })
    }

    /// Reads tensor `name` and checks its shape.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor, ModelError> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.shape,
            });
        }
        Ok(t)
    }
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
    /// Gathers and shape-checks the encoder's weights for `config` from `files`.
    pub fn load(files: &SafetensorsFiles, config: &EncoderConfig) -> Result<Self, ModelError> {
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
        let prefix = find_prefix(files)?;
        let h = config.hidden_size;
        let i_size = config.intermediate_size;
        let get = |name: &str, shape: &[usize]| files.get_shaped(&format!("{prefix}{name}"), shape);
        // Old TF-converted checkpoints call LayerNorm's parameters gamma/beta.
        let norm = |base: &str| -> Result<LayerNorm, ModelError> {
            let (w, b) = if files.contains(&format!("{prefix}{base}.weight")) {
                ("weight", "bias")
            } else {
                ("gamma", "beta")
            };
            Ok(LayerNorm {
                weight: get(&format!("{base}.{w}"), &[h])?,
                bias: get(&format!("{base}.{b}"), &[h])?,
            })
        };
        let linear = |base: &str, out: usize, inp: usize| -> Result<Linear, ModelError> {
            let bias_name = format!("{prefix}{base}.bias");
            Ok(Linear {
                weight: get(&format!("{base}.weight"), &[out, inp])?,
                bias: if files.contains(&bias_name) {
                    Some(files.get_shaped(&bias_name, &[out])?)
                } else {
                    None
                },
            })
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("encoder.layer.{l}");
            let layer = match config.architecture {
                Architecture::Bert | Architecture::XlmRoberta => LayerWeights {
                    query: linear(&format!("{p}.attention.self.query"), h, h)?,
                    key: linear(&format!("{p}.attention.self.key"), h, h)?,
                    value: linear(&format!("{p}.attention.self.value"), h, h)?,
                    attention_output: linear(&format!("{p}.attention.output.dense"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    intermediate: linear(&format!("{p}.intermediate.dense"), i_size, h)?,
                    output: linear(&format!("{p}.output.dense"), h, i_size)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                },
                Architecture::MPNet => LayerWeights {
                    query: linear(&format!("{p}.attention.attn.q"), h, h)?,
                    key: linear(&format!("{p}.attention.attn.k"), h, h)?,
                    value: linear(&format!("{p}.attention.attn.v"), h, h)?,
                    attention_output: linear(&format!("{p}.attention.attn.o"), h, h)?,
                    attention_norm: norm(&format!("{p}.attention.LayerNorm"))?,
                    intermediate: linear(&format!("{p}.intermediate.dense"), i_size, h)?,
                    output: linear(&format!("{p}.output.dense"), h, i_size)?,
                    output_norm: norm(&format!("{p}.output.LayerNorm"))?,
                },
                Architecture::ModernBert => unreachable!("returned at the top of load"),
                Architecture::Qwen3 | Architecture::Qwen2 | Architecture::Mistral => {
                    unreachable!("decoders returned at the top of load")
                }
            };
            layers.push(layer);
        }
        let token_type_embeddings = if config.type_vocab_size > 0 {
            Some(get(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?)
        } else {
            None
        };
        let relative_attention_bias = match config.relative_attention_num_buckets {
            Some(buckets) => Some(get(
                "encoder.relative_attention_bias.weight",
                &[buckets, config.num_heads],
            )?),
            None => None,
        };
        Ok(EncoderWeights {
            word_embeddings: get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            token_type_embeddings,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
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
