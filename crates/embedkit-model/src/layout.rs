//! The sentence-transformers folder layout: modules.json and the config file of each module.

use crate::ModelError;
use crate::files::{read_json, read_json_opt};
use crate::pooling::{PoolingConfig, PoolingMode};
use crate::weights::{Linear, SafetensorsFiles};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The activation after a Dense module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    /// `torch.nn.Identity`.
    Identity,
    /// `torch.nn.Tanh` (sentence-transformers' default).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
    /// `torch.nn.GELU`.
    Gelu,
    /// `torch.nn.Sigmoid`.
    Sigmoid,
    /// `torch.nn.SiLU`.
    Silu,
}

impl DenseActivation {
    /// Applies the activation to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            DenseActivation::Identity => x,
            DenseActivation::Tanh => x.tanh(),
            DenseActivation::Relu => x.max(0.0),
            DenseActivation::Gelu => 0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2)),
            DenseActivation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            DenseActivation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// erf for the Dense module's GELU (a cold path: one small layer per text). The Chebyshev fit of erfc from
/// Numerical Recipes (fractional error < 1.2e-7), evaluated in f64, is within an f32 ulp or two of torch's.
fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - r } else { r - 1.0 }) as f32
}

/// One module after pooling: a Dense projection or L2 normalization.
#[derive(Debug, Clone, PartialEq)]
pub enum PostPoolingStep {
    /// `act(x·Wᵀ + b)`.
    Dense {
        /// The projection.
        linear: Linear,
        /// The activation.
        activation: DenseActivation,
    },
    /// Scale to unit L2 norm.
    Normalize,
}

/// A model folder's sentence-transformers configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceTransformerLayout {
    /// Folder of the Transformer module (config.json, weights, tokenizer).
    pub transformer_dir: PathBuf,
    /// sentence_bert_config.json `max_seq_length`.
    pub max_seq_length: Option<usize>,
    /// sentence_bert_config.json `do_lower_case`: lowercase texts before tokenizing.
    pub do_lower_case: bool,
    /// How token vectors become one vector.
    pub pooling: PoolingConfig,
    /// Dense and Normalize modules after pooling, in order.
    pub post_pooling: Vec<PostPoolingStep>,
    /// Named prompts (config_sentence_transformers.json).
    pub prompts: BTreeMap<String, String>,
    /// The prompt applied when the caller names none.
    pub default_prompt_name: Option<String>,
    /// The similarity function the model was trained for (`cosine`, `dot`, `euclidean`, `manhattan`).
    pub similarity_fn_name: Option<String>,
    /// Whether modules.json was present (a plain transformers folder gets mean pooling, as in
    /// sentence-transformers).
    pub has_modules_json: bool,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    module_type: String,
}

#[derive(Deserialize, Default)]
struct SbertConfig {
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

#[derive(Deserialize, Default)]
struct StConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    default_prompt_name: Option<String>,
    similarity_fn_name: Option<String>,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "tanh_name")]
    activation_function: String,
}

fn yes() -> bool {
    true
}

fn tanh_name() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

impl SentenceTransformerLayout {
    /// Reads the layout of the model folder `dir` (modules.json and the config of each module).
    pub fn read(dir: &Path) -> Result<Self, ModelError> {
        let modules_path = dir.join("modules.json");
        let st: StConfig =
            read_json_opt(&dir.join("config_sentence_transformers.json"))?.unwrap_or_default();
        let mut layout = SentenceTransformerLayout {
            transformer_dir: dir.to_path_buf(),
            max_seq_length: None,
            do_lower_case: false,
            pooling: PoolingConfig::single(PoolingMode::Mean),
            post_pooling: Vec::new(),
            prompts: st.prompts,
            default_prompt_name: st.default_prompt_name,
            similarity_fn_name: st.similarity_fn_name,
            has_modules_json: modules_path.is_file(),
        };
        if !layout.has_modules_json {
            layout.read_sbert_config(dir)?;
            return Ok(layout);
        }
        let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
        for m in modules {
            let module_dir = dir.join(&m.path);
            // The class path changed across sentence-transformers versions
            // (sentence_transformers.models.Pooling, ...sentence_transformer.models.Pooling); the class name didn't.
            let class = m.module_type.rsplit('.').next().unwrap_or(&m.module_type);
            match class {
                "Transformer" => {
                    layout.transformer_dir = module_dir.clone();
                    layout.read_sbert_config(&module_dir)?;
                }
                "Pooling" => {
                    layout.pooling = PoolingConfig::read(&module_dir.join("config.json"))?;
                }
                "Dense" => layout.post_pooling.push(read_dense(&module_dir)?),
                "Normalize" => layout.post_pooling.push(PostPoolingStep::Normalize),
                _ => {
                    return Err(ModelError::UnsupportedModule {
                        path: modules_path,
                        module_type: m.module_type,
                    });
                }
            }
        }
        Ok(layout)
    }

    fn read_sbert_config(&mut self, dir: &Path) -> Result<(), ModelError> {
        let cfg: SbertConfig =
            read_json_opt(&dir.join("sentence_bert_config.json"))?.unwrap_or_default();
        self.max_seq_length = cfg.max_seq_length;
        self.do_lower_case = cfg.do_lower_case;
        Ok(())
    }

    /// Whether the model's own pipeline ends in unit vectors.
    pub fn normalizes(&self) -> bool {
        matches!(self.post_pooling.last(), Some(PostPoolingStep::Normalize))
    }

    /// Output dimensions after pooling and Dense modules.
    pub fn output_dims(&self, hidden_size: usize) -> usize {
        let mut dims = self.pooling.output_dims(hidden_size);
        for step in &self.post_pooling {
            if let PostPoolingStep::Dense { linear, .. } = step {
                dims = linear.weight.shape[0];
            }
        }
        dims
    }
}

fn read_dense(dir: &Path) -> Result<PostPoolingStep, ModelError> {
    let cfg_path = dir.join("config.json");
    let cfg: DenseConfig = read_json(&cfg_path)?;
    let class = cfg.activation_function.rsplit('.').next().unwrap_or("");
    let activation = match class {
        "Identity" => DenseActivation::Identity,
        "Tanh" => DenseActivation::Tanh,
        "ReLU" => DenseActivation::Relu,
        "GELU" => DenseActivation::Gelu,
        "Sigmoid" => DenseActivation::Sigmoid,
        "SiLU" => DenseActivation::Silu,
        _ => {
            return Err(ModelError::Config {
                path: cfg_path,
                field: "activation_function".into(),
                message: format!(
                    "'{}' is not supported (Identity, Tanh, ReLU, GELU, Sigmoid, SiLU)",
                    cfg.activation_function
                ),
            });
        }
    };
    let weights_path = dir.join("model.safetensors");
    if !weights_path.is_file() {
        if dir.join("pytorch_model.bin").is_file() {
            return Err(ModelError::PytorchOnly(dir.to_path_buf()));
        }
        return Err(ModelError::MissingFile {
            dir: dir.to_path_buf(),
            what: "model.safetensors for the Dense module".into(),
        });
    }
    let files = SafetensorsFiles::open_file(&weights_path)?;
    let weight = files.get_shaped("linear.weight", &[cfg.out_features, cfg.in_features])?;
    let bias = if cfg.bias {
        Some(files.get_shaped("linear.bias", &[cfg.out_features])?)
    } else {
        None
    };
    Ok(PostPoolingStep::Dense {
        linear: Linear { weight, bias },
        activation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [
            (0.0f32, 0.0f32),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (-2.0, -0.995_322_3),
        ] {
            assert!(
                (erf(x) - want).abs() < 2e-7,
                "erf({x}) = {} want {want}",
                erf(x)
            );
        }
    }
}
