//! `CrossEncoder`: a sequence-classification model folder (BERT, XLM-R/RoBERTa, ModernBERT heads) scoring
//! (query, document) pairs as sentence-transformers' `CrossEncoder.predict` and `rank` do.
//!
//! Pairs are tokenized as `tokenizer(a, b, truncation="longest_first", max_length=…)` (BERT: `[CLS] a [SEP] b
//! [SEP]` with token type 1 on the second segment; XLM-R: `<s> a </s></s> b </s>`), run unpadded through the
//! same [`Backend`] as embeddings, and the head (see [`ClassificationHead`]) maps the final hidden states to
//! `num_labels` logits. `predict` then applies the model's activation, chosen as sentence-transformers 6.2
//! chooses it: `activation_fn` in config_sentence_transformers.json, else config.json's
//! `sentence_transformers.activation_fn`, else its `sbert_ce_default_activation_function` (the hub's older
//! cross-encoders, e.g. ms-marco-MiniLM: Identity), else Sigmoid for one label and Identity for more.

use crate::ModelError;
use crate::backend::{Backend, BackendError, TokenBatch};
use crate::batch::plan_batches;
use crate::config::EncoderConfig;
use crate::cross_head::{
    ClassificationHead, SUPPORTED_CROSS_ENCODERS, activation_name, parse_activation,
};
use crate::embedder::{DEFAULT_BATCH_SIZE, dir_size, read_model_folder};
use crate::files::read_json_opt;
use crate::layout::DenseActivation;
use crate::tokenizer::{Encoded, TextTokenizer};
use crate::weights::{EncoderWeights, SafetensorsFiles};
use embedkit_core::EmbedError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokenizers::{PostProcessor, TruncationDirection};

/// Options of one [`CrossEncoder::predict`] call.
#[derive(Debug, Clone, Default)]
pub struct PredictOptions {
    /// Pairs per forward pass (default 32, as sentence-transformers).
    pub batch_size: Option<usize>,
    /// The activation on the logits; `None` uses the model's (see the module docs).
    /// `Some(DenseActivation::Identity)` gives raw logits.
    pub activation: Option<DenseActivation>,
    /// Cut pairs to at most this many tokens (never above the model's limit).
    pub max_length: Option<usize>,
    /// Refuse a pair that would be truncated instead of truncating it (TEI's `truncate: false`).
    pub refuse_truncation: bool,
}

/// One document of [`CrossEncoder::rank`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Ranked {
    /// Its index in the caller's list.
    pub index: usize,
    /// Its score (after the activation).
    pub score: f32,
}

/// Facts about a cross-encoder, for `embedkit models info` and the server's `/info`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CrossEncoderInfo {
    /// The name it was loaded as.
    pub name: String,
    /// The model folder.
    pub path: PathBuf,
    /// config.json's class, e.g. `BertForSequenceClassification`.
    pub architecture: String,
    /// The encoder family, e.g. `BERT`.
    pub encoder: String,
    /// Outputs per pair.
    pub num_labels: usize,
    /// config.json's `id2label`, in label order.
    pub labels: Vec<String>,
    /// The activation `predict` applies by default.
    pub activation: String,
    /// The head, in words.
    pub head: String,
    /// Token limit per pair, special tokens included.
    pub max_tokens: usize,
    /// Transformer width.
    pub hidden_size: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Parameters in the weights.
    pub parameters: usize,
    /// Bytes of all files in the folder.
    pub size_on_disk: u64,
    /// The backend that runs it.
    pub backend: String,
}

#[derive(Deserialize, Default)]
struct ClassifierConfig {
    #[serde(default)]
    architectures: Vec<String>,
    num_labels: Option<usize>,
    id2label: Option<BTreeMap<String, String>>,
    sentence_transformers: Option<StSection>,
    sbert_ce_default_activation_function: Option<String>,
}

#[derive(Deserialize, Default)]
struct StSection {
    activation_fn: Option<String>,
}

#[derive(Deserialize, Default)]
struct StCrossConfig {
    activation_fn: Option<String>,
}

/// config.json's sequence-classification class, if the folder holds one (its `architectures` names a
/// `*ForSequenceClassification`): such a folder is a cross-encoder, never a bi-encoder.
pub fn sequence_classification_class(config_json: &Path) -> Result<Option<String>, ModelError> {
    let cfg: ClassifierConfig = read_json_opt(config_json)?.unwrap_or_default();
    Ok(cfg
        .architectures
        .into_iter()
        .find(|a| a.ends_with("ForSequenceClassification")))
}

/// A cross-encoder folder loaded for inference on some [`Backend`].
pub struct CrossEncoder {
    name: String,
    dir: PathBuf,
    architecture: String,
    config: EncoderConfig,
    tokenizer: TextTokenizer,
    backend: Box<dyn Backend>,
    head: ClassificationHead,
    labels: Vec<String>,
    activation: DenseActivation,
    parameters: usize,
    /// sentence_bert_config.json `do_lower_case`.
    lowercase: bool,
    /// The tokenizer without truncation: pairs are cut by [`longest_first`] before their special tokens.
    pair_tokenizer: tokenizers::Tokenizer,
}

impl CrossEncoder {
    /// Loads the cross-encoder folder `dir`, handing its encoder weights to `make_backend`. A folder that is
    /// not a supported `*ForSequenceClassification` model is an error naming the supported classes.
    pub fn load<F>(name: &str, dir: &Path, make_backend: F) -> Result<Self, ModelError>
    where
        F: FnOnce(&EncoderConfig, EncoderWeights) -> Result<Box<dyn Backend>, BackendError>,
    {
        Self::load_with(name, dir, |config, files| {
            let weights = EncoderWeights::load(files, config)?;
            make_backend(config, weights).map_err(ModelError::Backend)
        })
    }

    /// Like [`CrossEncoder::load`], letting `make_backend` read the encoder's weights from the safetensors
    /// itself (encoders whose layers [`EncoderWeights`] does not describe, e.g. ModernBERT).
    pub fn load_with<F>(name: &str, dir: &Path, make_backend: F) -> Result<Self, ModelError>
    where
        F: FnOnce(&EncoderConfig, &SafetensorsFiles) -> Result<Box<dyn Backend>, ModelError>,
    {
        let (layout, config_path) = read_model_folder(dir)?;
        let tdir = layout.transformer_dir.clone();
        let raw: ClassifierConfig = crate::files::read_json(&config_path)?;
        let architecture = raw
            .architectures
            .iter()
            .find(|a| a.ends_with("ForSequenceClassification"))
            .cloned()
            .ok_or_else(|| ModelError::NotCrossEncoder {
                path: config_path.clone(),
                architectures: raw.architectures.join(", "),
            })?;
        if !SUPPORTED_CROSS_ENCODERS.contains(&architecture.as_str()) {
            return Err(ModelError::UnsupportedCrossEncoder {
                path: config_path,
                architecture,
            });
        }
        let config = EncoderConfig::from_file(&config_path)?;
        // transformers: num_labels is len(id2label) (2 when neither is written).
        let labels: Vec<String> = match &raw.id2label {
            Some(map) => {
                let mut v: Vec<(usize, String)> = map
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap_or(usize::MAX), v.clone()))
                    .collect();
                v.sort();
                v.into_iter().map(|(_, l)| l).collect()
            }
            None => (0..raw.num_labels.unwrap_or(2))
                .map(|i| format!("LABEL_{i}"))
                .collect(),
        };
        let num_labels = labels.len().max(1);
        let activation = default_activation(dir, &config_path, &raw, num_labels)?;
        let files = SafetensorsFiles::open_dir(&tdir)?;
        let parameters = files.num_parameters();
        let head =
            ClassificationHead::load(&architecture, &config_path, &config, &files, num_labels)?;
        let max_tokens = layout
            .max_seq_length
            .or_else(|| TextTokenizer::configured_max_length(&tdir))
            .unwrap_or(usize::MAX)
            .min(config.max_tokens());
        let tokenizer = TextTokenizer::load(&tdir, layout.do_lower_case, max_tokens)?;
        let mut pair_tokenizer = tokenizer.raw().clone();
        pair_tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer {
                path: tdir.clone(),
                message: e.to_string(),
            })?;
        let backend = make_backend(&config, &files)?;
        drop(files);
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            architecture,
            config,
            tokenizer,
            backend,
            head,
            labels,
            activation,
            parameters,
            lowercase: layout.do_lower_case,
            pair_tokenizer,
        })
    }

    /// The name it was loaded as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Outputs per pair.
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }

    /// The label names (config.json `id2label`), in label order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The activation `predict` applies by default.
    pub fn activation(&self) -> DenseActivation {
        self.activation
    }

    /// Token limit per pair, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// The encoder's configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Facts about the model.
    pub fn info(&self) -> CrossEncoderInfo {
        CrossEncoderInfo {
            name: self.name.clone(),
            path: self.dir.clone(),
            architecture: self.architecture.clone(),
            encoder: self.config.architecture.to_string(),
            num_labels: self.num_labels(),
            labels: self.labels.clone(),
            activation: activation_name(self.activation).into(),
            head: self.head.describe().into(),
            max_tokens: self.max_tokens(),
            hidden_size: self.config.hidden_size,
            layers: self.config.num_layers,
            heads: self.config.num_heads,
            parameters: self.parameters,
            size_on_disk: dir_size(&self.dir),
            backend: self.backend.name().to_string(),
        }
    }

    /// Token ids and type ids of each pair, exactly as `CrossEncoder` tokenizes them. The second result says
    /// which pairs were cut to fit.
    pub fn tokenize_pairs(
        &self,
        pairs: &[(&str, &str)],
        max_length: Option<usize>,
    ) -> Result<(Vec<Encoded>, Vec<bool>), EmbedError> {
        let limit = max_length
            .map_or(self.max_tokens(), |m| m.min(self.max_tokens()))
            .max(1);
        let tok = &self.pair_tokenizer;
        let added = tok.get_post_processor().map_or(0, |p| p.added_tokens(true));
        let budget = limit.saturating_sub(added);
        let prepared = |s: &str| -> String {
            // sentence-transformers 6 hands pair texts to the tokenizer as they are (no strip); lowercasing is
            // the tokenizer's job unless sentence_bert_config.json asks for it.
            if self.lowercase {
                s.to_lowercase()
            } else {
                s.to_string()
            }
        };
        let texts: Vec<String> = pairs
            .iter()
            .flat_map(|(a, b)| [prepared(a), prepared(b)])
            .collect();
        let singles = match tok.encode_batch(texts.clone(), false) {
            Ok(e) => e,
            Err(_) => {
                for (i, t) in texts.into_iter().enumerate() {
                    if let Err(e) = tok.encode(t, false) {
                        return Err(EmbedError::Tokenize {
                            index: i / 2,
                            message: e.to_string(),
                        });
                    }
                }
                return Err(EmbedError::Tokenize {
                    index: 0,
                    message: "tokenizer failed on the batch".into(),
                });
            }
        };
        let mut encoded = Vec::with_capacity(pairs.len());
        let mut truncated = Vec::with_capacity(pairs.len());
        let mut it = singles.into_iter();
        while let (Some(mut a), Some(mut b)) = (it.next(), it.next()) {
            let (na, nb) = longest_first(a.len(), b.len(), budget);
            truncated.push(na < a.len() || nb < b.len());
            a.truncate(na, 0, TruncationDirection::Right);
            b.truncate(nb, 0, TruncationDirection::Right);
            let e = tok
                .post_process(a, Some(b), true)
                .map_err(|e| EmbedError::Tokenize {
                    index: encoded.len(),
                    message: e.to_string(),
                })?;
            encoded.push(Encoded {
                ids: e.get_ids().to_vec(),
                type_ids: e.get_type_ids().to_vec(),
            });
        }
        Ok((encoded, truncated))
    }

    /// Scores of each pair, `num_labels` per pair, as `CrossEncoder.predict` gives them.
    pub fn predict(
        &self,
        pairs: &[(&str, &str)],
        options: &PredictOptions,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let batch_size = options.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(EmbedError::InvalidOption {
                option: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let (encoded, truncated) = self.tokenize_pairs(pairs, options.max_length)?;
        if options.refuse_truncation
            && let Some(i) = truncated.iter().position(|&t| t)
        {
            return Err(EmbedError::InvalidOption {
                option: "truncate",
                reason: format!(
                    "pair {i} is longer than the model's limit of {} tokens (allow truncation to cut it)",
                    self.max_tokens()
                ),
            });
        }
        let activation = options.activation.unwrap_or(self.activation);
        let hidden = self.config.hidden_size;
        let lengths: Vec<usize> = encoded.iter().map(|e| e.ids.len()).collect();
        let mut out = vec![Vec::new(); pairs.len()];
        let (mut ids, mut types, mut seq_lens) = (Vec::new(), Vec::new(), Vec::new());
        for batch in plan_batches(&lengths, batch_size, None) {
            ids.clear();
            types.clear();
            seq_lens.clear();
            for &i in &batch {
                ids.extend_from_slice(&encoded[i].ids);
                types.extend_from_slice(&encoded[i].type_ids);
                seq_lens.push(encoded[i].ids.len());
            }
            let states = self
                .backend
                .forward(&TokenBatch {
                    input_ids: &ids,
                    type_ids: &types,
                    seq_lens: &seq_lens,
                    key_lens: None,
                })
                .map_err(EmbedError::Backend)?;
            let mut offset = 0;
            for (&i, &len) in batch.iter().zip(&seq_lens) {
                let logits = self
                    .head
                    .logits(&states[offset * hidden..(offset + len) * hidden], hidden);
                out[i] = logits.into_iter().map(|x| activation.apply(x)).collect();
                offset += len;
            }
        }
        Ok(out)
    }

    /// The documents sorted by their score against `query`, best first (`CrossEncoder.rank`; the model must
    /// have one label).
    pub fn rank(
        &self,
        query: &str,
        documents: &[&str],
        options: &PredictOptions,
    ) -> Result<Vec<Ranked>, EmbedError> {
        if self.num_labels() != 1 {
            return Err(EmbedError::Unsupported(format!(
                "{} has {} labels ({}); ranking needs a cross-encoder with one (use predict for pair scores)",
                self.name,
                self.num_labels(),
                self.labels.join(", ")
            )));
        }
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        let scores = self.predict(&pairs, options)?;
        let mut ranked: Vec<Ranked> = scores
            .iter()
            .enumerate()
            .map(|(index, s)| Ranked { index, score: s[0] })
            .collect();
        // Stable: equal scores keep document order, as Python's sorted does.
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(ranked)
    }
}

/// sentence-transformers 6.2's choice of activation (see the module docs).
fn default_activation(
    dir: &Path,
    config_path: &Path,
    raw: &ClassifierConfig,
    num_labels: usize,
) -> Result<DenseActivation, ModelError> {
    let st_path = dir.join("config_sentence_transformers.json");
    let st: StCrossConfig = read_json_opt(&st_path)?.unwrap_or_default();
    if let Some(p) = &st.activation_fn
        && let Some(a) = parse_activation(p, &st_path, "activation_fn")?
    {
        return Ok(a);
    }
    let from_config = match (
        &raw.sentence_transformers,
        &raw.sbert_ce_default_activation_function,
    ) {
        (
            Some(StSection {
                activation_fn: Some(p),
            }),
            _,
        ) => Some((p, "sentence_transformers.activation_fn")),
        (_, Some(p)) => Some((p, "sbert_ce_default_activation_function")),
        _ => None,
    };
    if let Some((p, field)) = from_config
        && let Some(a) = parse_activation(p, config_path, field)?
    {
        return Ok(a);
    }
    Ok(if num_labels == 1 {
        DenseActivation::Sigmoid
    } else {
        DenseActivation::Identity
    })
}

/// How many tokens of each sequence a pair keeps under `budget` (special tokens excluded), as the Python
/// `tokenizers` 0.23.3 that sentence-transformers calls does with `truncation="longest_first"`: the shorter
/// keeps all it can up to half, the longer the rest, and when both are cut the longer gets the odd token. (The
/// tokenizers crate 0.23.2 gives that token to the second sequence even when the first is longer.)
fn longest_first(a: usize, b: usize, budget: usize) -> (usize, usize) {
    if a + b <= budget {
        return (a, b);
    }
    // Only the shorter length matters once the pair is over budget: the longer takes what is left.
    let (short, swapped) = if a > b { (b, true) } else { (a, false) };
    let (mut n1, mut n2) = if short > budget {
        (short, short)
    } else {
        (short, (budget - short).max(short))
    };
    if n1 + n2 > budget {
        n1 = budget / 2;
        n2 = n1 + budget % 2;
    }
    if swapped { (n2, n1) } else { (n1, n2) }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    #[test]
    fn longest_first_matches_python_tokenizers() {
        // Values from tokenizers 0.23.3 (Python), budget = max_length minus the 3 special tokens of a BERT pair.
        assert_eq!(longest_first(68, 64, 45), (23, 22));
        assert_eq!(longest_first(15, 32, 11), (5, 6));
        assert_eq!(longest_first(15, 32, 17), (8, 9));
        assert_eq!(longest_first(3, 40, 10), (3, 7));
        assert_eq!(longest_first(40, 3, 10), (7, 3));
        assert_eq!(longest_first(5, 5, 20), (5, 5));
    }
}
