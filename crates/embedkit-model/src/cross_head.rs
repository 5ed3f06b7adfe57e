//! The classification heads of cross-encoders (transformers' `*ForSequenceClassification`), which turn the
//! encoder's last hidden states of one (query, document) pair into `num_labels` scores, and the activation
//! sentence-transformers' `CrossEncoder.predict` puts on top of them.

use crate::ModelError;
use crate::config::EncoderConfig;
use crate::embedder::apply_linear;
use crate::layout::DenseActivation;
use crate::weights::{LayerNorm, Linear, SafetensorsFiles, Tensor};
use serde::Deserialize;
use std::path::Path;

/// The sequence-classification classes embedkit scores pairs with (config.json `architectures`).
pub const SUPPORTED_CROSS_ENCODERS: &[&str] = &[
    "BertForSequenceClassification",
    "XLMRobertaForSequenceClassification",
    "RobertaForSequenceClassification",
    "CamembertForSequenceClassification",
    "ModernBertForSequenceClassification",
];

/// How ModernBERT's head pools the token states (config.json `classifier_pooling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPooling {
    /// The first token ([CLS]).
    Cls,
    /// The mean over every token of the pair.
    Mean,
}

/// A classification head, by family.
#[derive(Debug, Clone)]
pub enum ClassificationHead {
    /// BERT: the pooler (dense + tanh on [CLS]), then `classifier`.
    Bert {
        /// `bert.pooler.dense`.
        pooler: Linear,
        /// `classifier`.
        classifier: Linear,
    },
    /// RoBERTa / XLM-R / CamemBERT (`RobertaClassificationHead`): dense + tanh on `<s>`, then `out_proj`.
    Roberta {
        /// `classifier.dense`.
        dense: Linear,
        /// `classifier.out_proj`.
        out_proj: Linear,
    },
    /// ModernBERT: CLS or mean pooling, its `head` (dense, activation, LayerNorm), then `classifier`.
    ModernBert {
        /// `classifier_pooling`.
        pooling: HeadPooling,
        /// `head.dense`.
        dense: Linear,
        /// `classifier_activation`.
        activation: DenseActivation,
        /// `head.norm` (zero bias when the config has `norm_bias: false`).
        norm: LayerNorm,
        /// `norm_eps`.
        eps: f32,
        /// `classifier`.
        classifier: Linear,
    },
}

#[derive(Deserialize, Default)]
struct ModernBertHeadConfig {
    classifier_pooling: Option<String>,
    classifier_activation: Option<String>,
    norm_eps: Option<f64>,
}

impl ClassificationHead {
    /// Reads the head of `architecture` (one of [`SUPPORTED_CROSS_ENCODERS`]) with `num_labels` outputs.
    pub(crate) fn load(
        architecture: &str,
        config_path: &Path,
        config: &EncoderConfig,
        files: &SafetensorsFiles,
        num_labels: usize,
    ) -> Result<Self, ModelError> {
        let h = config.hidden_size;
        let linear = |base: &str, out: usize, with_bias: bool| -> Result<Linear, ModelError> {
            let bias_name = format!("{base}.bias");
            Ok(Linear {
                weight: files.get_shaped(&format!("{base}.weight"), &[out, h])?,
                bias: if with_bias || files.contains(&bias_name) {
                    Some(files.get_shaped(&bias_name, &[out])?)
                } else {
                    None
                },
            })
        };
        match architecture {
            "BertForSequenceClassification" => Ok(ClassificationHead::Bert {
                pooler: linear("bert.pooler.dense", h, true)?,
                classifier: linear("classifier", num_labels, true)?,
            }),
            "XLMRobertaForSequenceClassification"
            | "RobertaForSequenceClassification"
            | "CamembertForSequenceClassification" => Ok(ClassificationHead::Roberta {
                dense: linear("classifier.dense", h, true)?,
                out_proj: linear("classifier.out_proj", num_labels, true)?,
            }),
            "ModernBertForSequenceClassification" => {
                let raw: ModernBertHeadConfig = crate::files::read_json(config_path)?;
                let bad = |field: &str, message: String| ModelError::Config {
                    path: config_path.to_path_buf(),
                    field: field.into(),
                    message,
                };
                let pooling = match raw.classifier_pooling.as_deref().unwrap_or("cls") {
                    "cls" => HeadPooling::Cls,
                    "mean" => HeadPooling::Mean,
                    other => {
                        return Err(bad(
                            "classifier_pooling",
                            format!("'{other}' is not cls or mean"),
                        ));
                    }
                };
                let activation = match raw.classifier_activation.as_deref().unwrap_or("gelu") {
                    "gelu" => DenseActivation::Gelu,
                    "relu" => DenseActivation::Relu,
                    "silu" | "swish" => DenseActivation::Silu,
                    "tanh" => DenseActivation::Tanh,
                    "linear" | "identity" => DenseActivation::Identity,
                    other => {
                        return Err(bad(
                            "classifier_activation",
                            format!("'{other}' is not supported (gelu, relu, silu, tanh, linear)"),
                        ));
                    }
                };
                let weight = files.get_shaped("head.norm.weight", &[h])?;
                let bias = if files.contains("head.norm.bias") {
                    files.get_shaped("head.norm.bias", &[h])?
                } else {
                    Tensor {
                        shape: vec![h],
                        data: vec![0.0; h],
                    }
                };
                Ok(ClassificationHead::ModernBert {
                    pooling,
                    dense: linear("head.dense", h, false)?,
                    activation,
                    norm: LayerNorm { weight, bias },
                    eps: raw.norm_eps.unwrap_or(1e-5) as f32,
                    classifier: linear("classifier", num_labels, true)?,
                })
            }
            other => Err(ModelError::UnsupportedCrossEncoder {
                path: config_path.to_path_buf(),
                architecture: other.to_string(),
            }),
        }
    }

    /// The logits of one pair from its token states (`tokens × hidden`, row-major).
    pub fn logits(&self, states: &[f32], hidden: usize) -> Vec<f32> {
        let cls = &states[..hidden];
        match self {
            ClassificationHead::Bert { pooler, classifier } => {
                let pooled = apply_linear(pooler, cls, f32::tanh);
                apply_linear(classifier, &pooled, |x| x)
            }
            ClassificationHead::Roberta { dense, out_proj } => {
                let x = apply_linear(dense, cls, f32::tanh);
                apply_linear(out_proj, &x, |x| x)
            }
            ClassificationHead::ModernBert {
                pooling,
                dense,
                activation,
                norm,
                eps,
                classifier,
            } => {
                let pooled = match pooling {
                    HeadPooling::Cls => cls.to_vec(),
                    HeadPooling::Mean => {
                        let n = (states.len() / hidden).max(1);
                        let mut sum = vec![0.0f32; hidden];
                        for row in states.chunks_exact(hidden) {
                            for (s, v) in sum.iter_mut().zip(row) {
                                *s += v;
                            }
                        }
                        sum.iter().map(|s| s / n as f32).collect()
                    }
                };
                let x = apply_linear(dense, &pooled, |x| activation.apply(x));
                apply_linear(classifier, &layer_norm(&x, norm, *eps), |x| x)
            }
        }
    }

    /// The head's shape in words, for `models info`.
    pub fn describe(&self) -> &'static str {
        match self {
            ClassificationHead::Bert { .. } => "pooler (dense + tanh on [CLS]) + classifier",
            ClassificationHead::Roberta { .. } => "dense + tanh on <s> + out_proj",
            ClassificationHead::ModernBert {
                pooling: HeadPooling::Cls,
                ..
            } => "CLS pooling + head (dense, activation, LayerNorm) + classifier",
            ClassificationHead::ModernBert { .. } => {
                "mean pooling + head (dense, activation, LayerNorm) + classifier"
            }
        }
    }
}

fn layer_norm(x: &[f32], norm: &LayerNorm, eps: f32) -> Vec<f32> {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    x.iter()
        .zip(&norm.weight.data)
        .zip(&norm.bias.data)
        .map(|((v, g), b)| (v - mean) * inv * g + b)
        .collect()
}

/// The activation `CrossEncoder.predict` applies, named by its dotted class path as sentence-transformers
/// stores it (`torch.nn.modules.activation.Sigmoid`, `torch.nn.modules.linear.Identity`, …). `None`: a
/// path sentence-transformers would not load without `trust_remote_code` (it then falls back to its default).
pub(crate) fn parse_activation(
    path: &str,
    source: &Path,
    field: &str,
) -> Result<Option<DenseActivation>, ModelError> {
    if !path.starts_with("torch.") {
        return Ok(None);
    }
    let class = path.rsplit('.').next().unwrap_or(path);
    Ok(Some(match class {
        "Identity" => DenseActivation::Identity,
        "Sigmoid" => DenseActivation::Sigmoid,
        "Tanh" => DenseActivation::Tanh,
        "ReLU" => DenseActivation::Relu,
        "GELU" => DenseActivation::Gelu,
        "SiLU" => DenseActivation::Silu,
        _ => {
            return Err(ModelError::Config {
                path: source.to_path_buf(),
                field: field.into(),
                message: format!(
                    "'{path}' is not supported (Identity, Sigmoid, Tanh, ReLU, GELU, SiLU)"
                ),
            });
        }
    }))
}

/// The activation's name as `models info` and reports show it.
pub fn activation_name(a: DenseActivation) -> &'static str {
    match a {
        DenseActivation::Identity => "identity",
        DenseActivation::Sigmoid => "sigmoid",
        DenseActivation::Tanh => "tanh",
        DenseActivation::Relu => "relu",
        DenseActivation::Gelu => "gelu",
        DenseActivation::Silu => "silu",
    }
}
